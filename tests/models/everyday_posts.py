"""Everyday posts written for these tests (never copied from any data set): ordinary chatter
that makes no false claim, in the styles a moderation stream is full of. None of them is
misinformation, so a model that scores them fake does so for their style, topic or mood."""

from __future__ import annotations

EVERYDAY_POSTS: dict[str, list[str]] = {
    "plain": [
        "Just finished my morning run, legs are jelly but worth it",
        "Anyone know a good pizza place near the station? Starving",
        "Finally watched the season finale tonight, no spoilers please",
        "Baked banana bread for the first time and it actually rose",
        "Traffic on the ring road is awful again this morning",
        "My cat has decided the keyboard is her new bed",
        "Three more days until the holidays, counting down",
        "New running shoes arrived, trying them out after work",
        "Reading a great novel about a lighthouse keeper, can't put it down",
        "Does anyone else forget why they walked into a room",
    ],
    "sport and music": [
        "What a goal in the last minute, the whole pub went mad",
        "Our team lost again, at least the weather was nice at the stadium",
        "Got tickets for the concert on Saturday, so excited!!!",
        "That guitar solo in the second song gave me chills",
        "Marathon training week 6 done, 30km long run on Sunday",
        "The new album is on repeat, track four is my favourite",
        "Can't believe the referee missed that foul, unbelievable",
        "Playing five-a-side tonight, need one more player if anyone is free",
    ],
    "angry": [
        "I am so angry at the airline, they lost my bag for the third time",
        "Absolutely furious, the landlord still hasn't fixed the heating",
        "Why does every customer service line keep you on hold for an hour",
        "Sick of the neighbours playing loud music at 3am every single night",
        "The train was cancelled AGAIN and nobody told us anything",
        "I hate Mondays so much, nothing ever goes right",
    ],
    "ironic": [
        "Oh great, another meeting that could have been an email. Love it",
        "Wonderful, it's raining on the one day I left my umbrella at home",
        "Nothing says relaxing weekend like assembling flat-pack furniture",
        "Thrilled that my phone decided to update during my presentation",
        "Yeah because waiting 40 minutes for a bus is exactly how I wanted to spend my day",
        "Best day ever: spilled coffee on my laptop and missed the bus",
    ],
    "profane": [
        "Damn this coffee is good",
        "What the hell was that ending, I need a sequel right now",
        "Holy crap I passed my driving test!!",
        "This bloody printer never works when I need it",
        "Screw it, ordering takeaway tonight",
        "My feet are killing me after that damn hike",
    ],
    "links and mentions": [
        "Photos from our trip to the lake are up http://photos.example.com/lake",
        "@sarah happy birthday! hope you have an amazing day",
        "Check out my new blog post about sourdough https://myblog.example.org/sourdough",
        "@mike are we still on for dinner at 8?",
        "Sign up for the charity fun run here www.funrun.example.com #charity",
        "Loved this recipe, thanks @chefanna https://recipes.example.net/pasta",
    ],
    "politics and opinion": [
        "I think the new bike lanes downtown are a great idea",
        "Went to vote this morning, short queue at the school",
        "Not sure how I feel about the council's plan for the park",
        "Watched the debate last night, both candidates dodged the questions",
        "Proud of our town for raising so much money for the food bank",
        "Climate march in the city centre today, huge turnout",
    ],
    "health and news chatter": [
        "Got my flu jab today, arm is a bit sore",
        "Feeling under the weather, staying in with soup and tea",
        "Dentist appointment tomorrow, wish me luck",
        "The news tonight was so depressing, had to switch it off",
        "Started drinking more water this week and I already feel better",
        "Hospital staff were so kind when my gran was admitted, thank you",
    ],
    "emoji and slang": [
        "lol this meme is sending me 😂😂😂",
        "omg the sunset tonight 🌅🔥",
        "ngl this week has been rough but we move 💪",
        "brb getting snacks 🍿",
        "tfw you finally find the tv remote 🙌",
        "vibes are immaculate today ✨☀️",
    ],
}
