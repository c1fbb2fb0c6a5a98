"""The vocabulary of the built-in world (:mod:`search_env.data.synthetic`): the grammar its made-up
names come from, the English words no name may be, and the words and phrases of its pages and titles.

Pure data (the blocked words are read from the data file ``blocked_names.txt``). Every generated
world follows from these tables: changing one changes the passages, the questions and the corpus
fingerprint of every seed.
"""

from __future__ import annotations

from importlib import resources

# ---------------------------------------------------------------------------------------------
# Names. A word is an onset, a vowel, a medial consonant cluster, optionally another vowel and
# consonant, then an ending. The endings were chosen to be rare in English; BLOCKED holds every
# word this grammar can produce that is among the 100,000 most frequent English words (real
# names and places included, from `wordfreq`) or in the web2 and GCIDE dictionaries (from
# `english-words`), so no generated name is an English word. The list lives in the data file
# blocked_names.txt beside this module; regenerate it when the grammar changes.

ONSETS = ("", "b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r",
          "s", "sk", "t", "tr", "th", "v", "vr", "z")
VOWELS = ("a", "a", "e", "e", "i", "o", "o", "u", "y")
MEDIALS = ("l", "n", "r", "s", "v", "d", "t", "k", "m", "th", "rv", "lv", "nd", "rd", "st",
           "sk", "ld", "ll", "rr", "sh", "sm", "rn", "lt", "ltr", "nth", "rk", "lm")
FEMALE_ENDINGS = ("ava", "eska", "ewyn", "ethra", "ossa", "yra", "eni", "essa", "esta", "ilde",
                  "ira", "elle", "aith")
MALE_ENDINGS = ("arn", "eld", "evar", "orth", "oth", "ovar", "ovin", "uin", "uld", "ulf", "unn",
                "amar", "eyn", "yth", "ask", "orn", "ost", "ryn", "yr", "ael", "iro", "aro",
                "ath", "isk", "oni", "und", "andir", "oss", "aryn", "erund")
ENDINGS = FEMALE_ENDINGS + MALE_ENDINGS
COUNTRY_ENDINGS = ("enia", "aria", "ovia", "ethia", "istan", "ador", "amor", "evor", "ania",
                   "uria", "ostan", "avia")
CITY_ENDINGS = ("enholm", "amere", "evik", "aford", "owick", "esby", "astad", "ingard")

SIMPLE_MEDIALS = ("l", "n", "r", "s", "v", "d", "t", "k", "m", "th", "sh")
_HEAD = (ONSETS, VOWELS, MEDIALS)
_LONG_HEAD = _HEAD + (VOWELS, SIMPLE_MEDIALS)
# kind of word -> its patterns (a pattern is a tuple of slots); a repeated pattern weighs more
GRAMMAR: dict[str, tuple[tuple[tuple[str, ...], ...], ...]] = {
    "female": (_HEAD + (FEMALE_ENDINGS,),) * 3 + (_LONG_HEAD + (FEMALE_ENDINGS,),),
    "male": (_HEAD + (MALE_ENDINGS,),) * 3 + (_LONG_HEAD + (MALE_ENDINGS,),),
    "stem": (_HEAD + (ENDINGS,),) * 3 + (_LONG_HEAD + (ENDINGS,),),
    "country": (_HEAD + (COUNTRY_ENDINGS,), _LONG_HEAD + (COUNTRY_ENDINGS,)),
    "city": (_HEAD + (ENDINGS,), _HEAD + (CITY_ENDINGS,), _LONG_HEAD + (ENDINGS,)),
}


def _load_words(filename: str) -> frozenset[str]:
    """The whitespace-separated words of a data file of this package, its ``#`` comment lines skipped."""
    text = resources.files("search_env.data").joinpath(filename).read_text(encoding="utf-8")
    return frozenset(word for line in text.splitlines() if not line.lstrip().startswith("#")
                     for word in line.split())


BLOCKED = _load_words("blocked_names.txt")

# ---------------------------------------------------------------------------------------------
# Descriptions, titles and flavour.

PRESS_SUFFIXES = ("Press", "Books", "Publishing", "House")
STUDIO_SUFFIXES = ("Studios", "Pictures", "Films")
LABEL_SUFFIXES = ("Records", "Recordings", "Music")
OTHER_SUFFIXES = ("Industries", "Works", "Group", "Holdings", "Company", "Manufacturing")
PRESS_DESCRIPTIONS = ("publishing house", "publisher", "book publisher")
STUDIO_DESCRIPTIONS = ("film studio", "production company", "film company")
LABEL_DESCRIPTIONS = ("record label", "music label", "independent record label")
OTHER_DESCRIPTIONS = ("shipbuilding company", "textile manufacturer", "railway company", "brewery", "mining company",
                      "chemical company", "engineering firm", "glassworks", "steel producer", "insurance company")
BAND_FORMS = (  # name suffix ("" for "The <Stem>s"), description, noun for the group
    ("", ("rock band", "folk band", "pop group", "punk band", "indie band"), "band"),
    ("Quartet", ("string quartet", "jazz quartet"), "quartet"),
    ("Ensemble", ("chamber ensemble", "early music ensemble"), "ensemble"),
    ("Orchestra", ("symphony orchestra", "chamber orchestra"), "orchestra"),
    ("Trio", ("jazz trio", "piano trio"), "trio"),
    ("Collective", ("music collective", "electronic music collective"), "collective"),
)
OCCUPATIONS = ("painter", "physicist", "architect", "composer", "politician", "engineer", "poet",
               "chemist", "historian", "economist", "diplomat", "sculptor", "mathematician",
               "journalist", "photographer", "botanist", "judge", "surgeon", "philosopher")
PERSON_ADJECTIVES = ("noted", "prolific", "celebrated", "little-known", "influential",
                     "self-taught", "award-winning", "controversial")
NOUNS = ("Lantern", "Harbour", "Winter", "Garden", "Orchard", "Mirror", "Bell", "Daughter",
         "Crossing", "Tide", "Meridian", "Compass", "Lighthouse", "Ferry", "Clockmaker",
         "Archive", "Cartographer", "Weaver", "Summer", "Orchid", "Salt", "Ember", "Threshold",
         "Cathedral", "Heron", "Furnace", "Almanac", "Violin", "Sparrow", "Quarry", "Tapestry",
         "Pilgrim", "Harvest", "Citadel", "Widow", "Signal", "Observatory", "Embassy", "Orchestra",
         "Ledger", "Island", "Frontier", "Canal", "Monsoon", "Glacier", "Ferryman", "Beacon")
ADJECTIVES = ("Silent", "Glass", "Amber", "Last", "Hollow", "Distant", "Iron", "Crimson", "Quiet",
              "Northern", "Secret", "Paper", "Burning", "Forgotten", "Golden", "Broken", "Winter",
              "Sleeping", "Lost", "Blue", "Bitter", "Wandering", "Invisible", "Long")
TITLE_FORMS = ("{s}", "The {n} of {s}", "{s}'s {n}", "The {a} {n} of {s}", "{n}s of {s}",
               "Return to {s}", "The Last {n} of {s}", "A {n} for {s}", "{s} {n}s", "After {s}")
PROTAGONISTS = ("a young cartographer", "two estranged sisters", "a disgraced judge", "an ageing ferryman",
                "a travelling clockmaker", "a widowed innkeeper", "three orphaned brothers",
                "a stubborn schoolteacher", "an exiled prince", "a failing painter", "a lighthouse keeper")
FILM_GENRES = ("drama", "comedy", "thriller", "western", "musical", "science fiction", "crime",
               "romance", "war", "historical drama")
CITY_KINDS = ("city", "town", "port city", "market town", "river town", "city")
DIRECTIONS = ("north", "south", "east", "west", "north-east", "north-west", "south-east", "south-west")
CITY_FEATURES = ("textile mills", "harbour", "cathedral", "spring festival", "glassworks", "botanical garden",
                 "covered market", "clock tower", "shipyards", "vineyards", "old stone bridge")
GOVERNMENTS = ("republic", "kingdom", "federal republic", "principality", "constitutional monarchy")
REGION_FORMS = ("the {s} Peninsula", "the {s} Highlands", "the {s} Archipelago", "the {s} Basin",
                "the {s} Plain")
FIELDS = ("medicine", "law", "engineering", "music", "astronomy", "agriculture", "philosophy", "economics")
MUSIC_STYLES = ("folk", "jazz", "blues", "baroque", "electronic", "sea shanty", "gospel")
ORDINALS = ("debut", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth")
