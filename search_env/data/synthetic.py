"""The built-in world: a generated encyclopedia of fictional entities and questions about it.

People, cities, countries, universities, companies, bands and works get made-up, pronounceable
names and functional relations (each subject has exactly one value), are written out as
Wikipedia-like passages, and are asked about in 1-, 2- and 3-hop questions whose gold passages
are known. Being fictional, the answers cannot come from a language model's memory: retrieval
matters. Everything follows from ``np.random.default_rng(seed)``.

A page states its entity's own facts and never lists what points at it (a person's page names
no novels of theirs), so the hops of a multi-hop question cannot be skipped by one lucky search.
Pages also mention unrelated entities (a contemporary, a rival, a twin town) as distractors.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np

from search_env._cache import built_once
from search_env.data import synthetic_words as vocab
from search_env.data.collection import Corpus, Passage, QADataset, QAItem


@dataclass(frozen=True)
class World:
    """A generated world: its passages, the questions about them, and the seed they follow from."""

    corpus: Corpus
    questions: QADataset
    seed: int


def build_world(seed: int = 0, n_passages: int = 3000) -> World:
    """Generate the world for ``seed``: about ``n_passages`` passages and a third as many questions.

    Built once per ``(seed, n_passages)`` in a process (``search_env._cache.forget("world")`` drops them);
    ``build_world()`` is the world ``gym.make("search_env:SearchQA-v0")`` uses.

    Args:
        seed: the world's seed; the same seed gives the same world on every machine.
        n_passages: about how many passages (at least 50).

    Returns:
        A :class:`World` with its ``corpus`` and ``questions`` (1-, 2- and 3-hop, with gold titles).

    Raises:
        ValueError: ``n_passages`` below 50.
    """
    if n_passages < 50:
        raise ValueError(f"n_passages must be at least 50, got {n_passages}")
    return built_once("world", (seed, n_passages), lambda: _Builder(seed, n_passages).build())


# ---------------------------------------------------------------------------------------------
# Kinds of entity and how many of each.

PERSON, CITY, COUNTRY, UNIVERSITY, COMPANY, BAND, NOVEL, FILM, ALBUM, YEAR = (
    "person", "city", "country", "university", "company", "band", "novel", "film", "album", "year",
)

# Share of the corpus per kind of entity; one passage per entity.
_SHARES = (
    (PERSON, 0.40), (CITY, 0.10), (COUNTRY, 0.01), (UNIVERSITY, 0.04), (COMPANY, 0.10),
    (BAND, 0.04), (NOVEL, 0.13), (FILM, 0.10), (ALBUM, 0.08),
)
_HOP_SHARES = (0.4, 0.4, 0.2)  # 1-, 2- and 3-hop questions
_QUESTIONS_PER_PASSAGE = 1 / 3
# A question starts at an entity drawn kind first, a kind weighing as the square root of its
# share, so that rare kinds (countries, bands) are asked about too.
_START_WEIGHTS = np.sqrt([share for _, share in _SHARES])
_START_CUMULATIVE = tuple((np.cumsum(_START_WEIGHTS) / _START_WEIGHTS.sum())[:-1].tolist())
_NOW = 2024

# ---------------------------------------------------------------------------------------------
# Relations. Each (relation, subject kind) has question templates (the first is the plain one
# used in decompositions) and noun phrases that stand for its value inside a longer question.
# Phrases are nested right-branching only: a phrase that is not a bare name is wrapped in a
# template that ends with the slot ("the capital of {x}"), and so is a question around a phrase
# holding a clause ("the city where {x} was born"); clauses never sit inside other words.


@dataclass(frozen=True)
class _Relation:
    name: str
    domain: str
    range: str
    questions: tuple[str, ...]
    phrases: tuple[str, ...] = ()


# The table itself is data: relations.json beside this module, one object per (relation, subject
# kind) with the fields of _Relation (kinds by name), in the order questions draw them.
_KINDS = {kind: kind for kind in (PERSON, CITY, COUNTRY, UNIVERSITY, COMPANY, BAND, NOVEL, FILM, ALBUM, YEAR)}


def _load_relations() -> tuple[_Relation, ...]:
    """The relations of ``relations.json``, their kinds checked against the kinds of entity."""
    rows = json.loads(resources.files("search_env.data").joinpath("relations.json").read_text(encoding="utf-8"))
    return tuple(_Relation(row["name"], _KINDS[row["domain"]], _KINDS[row["range"]], tuple(row["questions"]),
                           tuple(row.get("phrases", ()))) for row in rows)


_RELATIONS = _load_relations()
_RELATIONS_OF: dict[str, tuple[_Relation, ...]] = {
    kind: tuple(r for r in _RELATIONS if r.domain == kind) for kind, _ in _SHARES
}
RELATION_NAMES = tuple(dict.fromkeys(r.name for r in _RELATIONS))  # public: the relations questions ask about

# ---------------------------------------------------------------------------------------------
# Kinds of company: name suffixes, descriptions and the role their founder takes on.

_COMPANY_KINDS = (  # kind, share, name suffixes, descriptions, founder role
    ("press", 0.30, vocab.PRESS_SUFFIXES, vocab.PRESS_DESCRIPTIONS, "publisher"),
    ("studio", 0.25, vocab.STUDIO_SUFFIXES, vocab.STUDIO_DESCRIPTIONS, "film producer"),
    ("label", 0.20, vocab.LABEL_SUFFIXES, vocab.LABEL_DESCRIPTIONS, "record producer"),
    ("other", 0.25, vocab.OTHER_SUFFIXES, vocab.OTHER_DESCRIPTIONS, "industrialist"),
)

# ---------------------------------------------------------------------------------------------
# The builder.


class _Rand:
    """Fast scalar draws from ``np.random.default_rng(seed)``, fetched in blocks."""

    def __init__(self, seed: int):
        self.gen = np.random.default_rng(seed)
        self.random = functools.partial(next, itertools.chain.from_iterable(self._blocks()))

    def _blocks(self):
        while True:
            yield self.gen.random(1 << 16).tolist()

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def choice(self, seq):
        return seq[int(self.random() * len(seq))]

    def randint(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi], both included."""
        return lo + int(self.random() * (hi - lo + 1))

    def chance(self, p: float) -> bool:
        return self.random() < p

    def sample(self, seq, k: int) -> list:
        return [seq[i] for i in self.gen.permutation(len(seq))[:k]]


class _Namer:
    """Unique words from the grammar, never a blocked English word nor a word given out before."""

    def __init__(self, rand: _Rand):
        self._rand = rand
        self._used: set[str] = set()

    def word(self, kind: str) -> str:
        choice = self._rand.choice
        patterns = vocab.GRAMMAR[kind]
        while True:
            word = "".join([choice(slot) for slot in choice(patterns)])
            if word not in self._used and word not in vocab.BLOCKED:
                self._used.add(word)
                return word.capitalize()


class _Entity:
    __slots__ = ("kind", "name", "facts", "info", "doc_id")

    def __init__(self, kind: str, name: str, **info):
        self.kind = kind
        self.name = name
        self.facts: dict[str, _Entity | int] = {}  # relation name -> value: the entity's own facts
        self.info = info  # what the page says besides the facts
        self.doc_id = ""


class _ByYear:
    """Entities sorted by a year, to draw one whose year falls in a range."""

    def __init__(self, entities: list[_Entity], year_of):
        self.items = sorted(entities, key=year_of)
        self.years = [year_of(e) for e in self.items]

    def draw(self, rand: _Rand, lo: int = -10**9, hi: int = 10**9) -> _Entity:
        """Uniform among the entities with ``lo <= year <= hi``; the nearest one if there is none."""
        start = bisect.bisect_left(self.years, lo)
        stop = bisect.bisect_right(self.years, hi)
        if start >= stop:
            return self.items[min(start, len(self.items) - 1)]
        return self.items[start + rand.below(stop - start)]


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


class _Builder:
    def __init__(self, seed: int, n_passages: int):
        self.seed = seed
        self.rand = _Rand(seed)
        self.namer = _Namer(self.rand)
        self.counts = {kind: max(2, round(share * n_passages)) for kind, share in _SHARES}
        self.of: dict[str, list[_Entity]] = {kind: [] for kind, _ in _SHARES}

    def build(self) -> World:
        self._places()
        self._universities()
        self._people()
        self._companies()
        self._bands()
        self._works()
        corpus = self._corpus()
        questions = self._questions(round(len(corpus) * _QUESTIONS_PER_PASSAGE))
        return World(corpus, questions, self.seed)

    # -- entities ------------------------------------------------------------------------------

    def _places(self) -> None:
        r, word = self.rand, self.namer.word
        regions = [r.choice(vocab.REGION_FORMS).format(s=word("stem"))
                   for _ in range(max(2, self.counts[COUNTRY] // 4))]
        countries = self.of[COUNTRY]
        for _ in range(self.counts[COUNTRY]):
            countries.append(_Entity(COUNTRY, word("country"), region=r.choice(regions),
                                     government=r.choice(vocab.GOVERNMENTS), cities=[]))
        for i in range(self.counts[CITY]):
            country = countries[i] if i < len(countries) else r.choice(countries)
            city = _Entity(CITY, word("city"), population=r.randint(8, 900) * 1000 + r.below(1000),
                           river=word("stem") if r.chance(0.4) else None)
            city.facts["country"] = country
            country.info["cities"].append(city)
            if i < len(countries):
                country.facts["capital"] = city
            self.of[CITY].append(city)

    def _universities(self) -> None:
        r, word = self.rand, self.namer.word
        for _ in range(self.counts[UNIVERSITY]):
            stem = word("stem")
            if r.chance(0.5):
                name, alias = f"{stem} University", f"University of {stem}"
            elif r.chance(0.6):
                name, alias = f"University of {stem}", f"{stem} University"
            else:
                name, alias = r.choice((f"{stem} Institute of Technology", f"{stem} College")), None
            uni = _Entity(UNIVERSITY, name, alias=alias, field=r.choice(vocab.FIELDS),
                          students=r.randint(2, 60) * 500)
            uni.facts["located_in"] = r.choice(self.of[CITY])
            uni.facts["founded_year"] = 1150 + int(830 * r.random() ** 1.4)
            self.of[UNIVERSITY].append(uni)

    def _people(self) -> None:
        r, word = self.rand, self.namer.word
        n = self.counts[PERSON]
        firsts = {"f": [word("female") for _ in range(max(10, n // 12))],
                  "m": [word("male") for _ in range(max(10, n // 12))]}
        surnames = [word("stem") for _ in range(max(20, n // 3))]
        universities = _ByYear(self.of[UNIVERSITY], lambda u: u.facts["founded_year"])
        taken: set[str] = set()
        for _ in range(n):
            gender = "f" if r.chance(0.5) else "m"
            while True:
                surname = r.choice(surnames)
                name = f"{r.choice(firsts[gender])} {surname}"
                if name not in taken:
                    taken.add(name)
                    break
            birth = r.randint(1780, 1995)
            death = birth + r.randint(40, 95)
            person = _Entity(PERSON, name, gender=gender, surname=surname,
                             death=death if death < _NOW else None, roles=[],
                             occupation=r.choice(vocab.OCCUPATIONS))
            person.facts.update(birth_year=birth, born_in=r.choice(self.of[CITY]),
                                educated_at=universities.draw(r, hi=birth + 18))
            self.of[PERSON].append(person)
        self.people = _ByYear(self.of[PERSON], lambda p: p.facts["birth_year"])
        self.by_surname: dict[str, list[_Entity]] = {}
        for person in self.of[PERSON]:
            self.by_surname.setdefault(person.info["surname"], []).append(person)
        # Marriages between people of about the same age; only the first page names the other.
        order = self.people.items
        for i in range(0, len(order) - 1, 2):
            if r.chance(0.35):
                a, b = (order[i], order[i + 1]) if r.chance(0.5) else (order[i + 1], order[i])
                a.facts["spouse"] = b
                a.info["married"] = self._year_in_life(max(a, b, key=lambda p: p.facts["birth_year"]), 19, 35)

    def _companies(self) -> None:
        r, word = self.rand, self.namer.word
        earliest_founder = {"press": 1780, "studio": 1860, "label": 1870, "other": 1780}
        self.companies: dict[str, list[_Entity]] = {kind[0]: [] for kind in _COMPANY_KINDS}
        shares = np.cumsum([kind[1] for kind in _COMPANY_KINDS])
        for i in range(self.counts[COMPANY]):
            kind = _COMPANY_KINDS[i if i < len(_COMPANY_KINDS) else int(np.searchsorted(shares, r.random()))]
            key, _, suffixes, descriptions, role = kind
            founder = self.people.draw(r, lo=earliest_founder[key])
            company = _Entity(COMPANY, f"{word('stem')} {r.choice(suffixes)}", sector=key,
                              description=r.choice(descriptions), employees=r.randint(1, 400) * 50)
            year = self._year_in_life(founder, 22, 55)
            company.facts.update(headquartered_in=r.choice(self.of[CITY]), founded_by=founder, founded_year=year)
            if role not in founder.info["roles"]:
                founder.info["roles"].append(role)
            self.companies[key].append(company)
            self.of[COMPANY].append(company)
        self.company_by_year = {key: _ByYear(items, lambda c: c.facts["founded_year"])
                                for key, items in self.companies.items()}

    def _bands(self) -> None:
        r, word = self.rand, self.namer.word
        for _ in range(self.counts[BAND]):
            suffix, descriptions, noun = r.choice(vocab.BAND_FORMS)
            stem = word("stem")
            name = f"The {stem}s" if not suffix else f"{stem} {suffix}"
            band = _Entity(BAND, name, plural=not suffix, description=r.choice(descriptions), noun=noun,
                           albums=[], alias=f"{stem}s" if not suffix else None)
            band.facts.update(located_in=r.choice(self.of[CITY]), founded_year=r.randint(1950, 2018))
            self.of[BAND].append(band)

    def _title(self) -> str:
        r = self.rand
        title = r.choice(vocab.TITLE_FORMS).format(s=self.namer.word("stem"), n=r.choice(vocab.NOUNS),
                                                   a=r.choice(vocab.ADJECTIVES))
        return "An" + title[1:] if title.startswith("A ") and title[2] in "AEIOU" else title

    def _creators(self, share: float, lo: int, role: str) -> list[_Entity]:
        """A pool of people, born in ``lo`` or later, who take on ``role``."""
        eligible = self.people.items[bisect.bisect_left(self.people.years, lo):]
        pool = self.rand.sample(eligible, max(1, round(share * len(eligible))))
        for person in pool:
            person.info["roles"].append(role)
        return pool

    def _works(self) -> None:
        r = self.rand
        novelists = self._creators(self.counts[NOVEL] / self.counts[PERSON] / 2.2, 1780, "novelist")
        for _ in range(self.counts[NOVEL]):
            author = r.choice(novelists)
            year = self._year_in_life(author, 22, 70)
            novel = _Entity(NOVEL, self._title(), protagonist=r.choice(vocab.PROTAGONISTS),
                            setting=r.choice(self.of[CITY]))
            novel.facts.update(author=author, release_year=year,
                               publisher=self.company_by_year["press"].draw(r, hi=year))
            self.of[NOVEL].append(novel)

        directors = self._creators(self.counts[FILM] / self.counts[PERSON] / 2.5, 1870, "film director")
        actors = _ByYear(self._creators(0.05, 1870, "actor"), lambda p: p.facts["birth_year"])
        for _ in range(self.counts[FILM]):
            director = r.choice(directors)
            year = max(1905, self._year_in_life(director, 25, 60))
            cast = [actors.draw(r, lo=year - 70, hi=year - 16) for _ in range(2)]
            film = _Entity(FILM, self._title(), genre=r.choice(vocab.FILM_GENRES),
                           setting=r.choice(self.of[CITY]), cast=cast if cast[0] is not cast[1] else cast[:1])
            film.facts.update(director=director, release_year=year,
                              publisher=self.company_by_year["studio"].draw(r, hi=year))
            self.of[FILM].append(film)

        for _ in range(self.counts[ALBUM]):
            band = r.choice(self.of[BAND])
            year = min(band.facts["founded_year"] + r.randint(0, 25), _NOW)
            album = _Entity(ALBUM, self._title(), studio_city=r.choice(self.of[CITY]), weeks=r.randint(2, 12))
            album.facts.update(performer=band, release_year=year,
                               publisher=self.company_by_year["label"].draw(r, hi=year))
            band.info["albums"].append(album)
            self.of[ALBUM].append(album)
        for band in self.of[BAND]:
            band.info["albums"].sort(key=lambda a: a.facts["release_year"])
            for i, album in enumerate(band.info["albums"]):
                album.info["ordinal"] = vocab.ORDINALS[i] if i < len(vocab.ORDINALS) else None

    def _year_in_life(self, person: _Entity, lo: int, hi: int) -> int:
        """A year ``lo`` to ``hi`` years after the person's birth, within their life and before now."""
        birth, death = person.facts["birth_year"], person.info["death"] or _NOW
        return min(birth + self.rand.randint(lo, hi), death, _NOW)

    # -- passages ------------------------------------------------------------------------------

    def _corpus(self) -> Corpus:
        entities = [e for kind, _ in _SHARES for e in self.of[kind]]
        order = self.rand.gen.permutation(len(entities))
        self.entities = [entities[i] for i in order]
        writers = {PERSON: self._person_text, CITY: self._city_text, COUNTRY: self._country_text,
                   UNIVERSITY: self._university_text, COMPANY: self._company_text, BAND: self._band_text,
                   NOVEL: self._novel_text, FILM: self._film_text, ALBUM: self._album_text}
        passages = []
        for i, entity in enumerate(self.entities):
            entity.doc_id = str(i)
            passages.append(Passage(entity.doc_id, entity.name, writers[entity.kind](entity)))
        return Corpus(passages, name=f"world{self.seed}")

    def _other(self, pool: list[_Entity], entity: _Entity) -> _Entity | None:
        other = self.rand.choice(pool)
        return None if other is entity else other

    def _mention(self, sentences: list[str], pool: list[_Entity], entity: _Entity, p: float,
                 sentence: Callable[[_Entity], str]) -> None:
        """With probability ``p``, add ``sentence(other)``: a distractor naming another entity of ``pool``."""
        other = self._other(pool, entity)
        if other is not None and self.rand.chance(p):
            sentences.append(sentence(other))

    def _person_text(self, p: _Entity) -> str:
        r, f, info = self.rand, p.facts, p.info
        she, her = ("She", "Her") if info["gender"] == "f" else ("He", "His")
        birth, death = f["birth_year"], info["death"]
        life, be = (f"{birth}–{death}", "was") if death else (f"born {birth}", "is")
        occupation = _and(info["roles"] or [info["occupation"]])
        if r.chance(0.4):
            occupation = f"{r.choice(vocab.PERSON_ADJECTIVES)} {occupation}"
        city, uni = f["born_in"].name, _ref(f["educated_at"])
        sentences = [
            f"{p.name} ({life}) {be} {_a(occupation)}.",
            r.choice((
                f"{she} was born in {city} and studied at {uni}.",
                f"Born in {city}, {she.lower()} was educated at {uni}.",
                f"{she} was born in {city}. {she} later graduated from {uni}.",
                f"{she} was born in {city} and attended {uni}.",
            )),
        ]
        if "spouse" in f:
            spouse = f["spouse"].name
            sentences.append(r.choice((f"{she} married {spouse} in {info['married']}.",
                                       f"In {info['married']} {she.lower()} married {spouse}.",
                                       f"{she} was married to {spouse}.")))
        namesake = self._other(self.by_surname[info["surname"]], p)
        other = self._other(self.of[PERSON], p)
        if namesake is not None and r.chance(0.6):
            sentences.append(f"{she} is not to be confused with {namesake.name}.")
        elif other is not None and r.chance(0.4):
            sentences.append(r.choice((f"{she} was a contemporary of {other.name}.",
                                       f"{her} letters to {other.name} survive in several archives.",
                                       f"{she} collaborated for some years with {other.name}.")))
        return " ".join(sentences)

    def _city_text(self, c: _Entity) -> str:
        r, info = self.rand, c.info
        country = c.facts["country"]
        if country.facts["capital"] is c:
            first = r.choice((f"{c.name} is the capital of {country.name}.",
                              f"{c.name} is the capital city of {country.name}."))
        else:
            first = r.choice((f"{c.name} is {_a(r.choice(vocab.CITY_KINDS))} in {country.name}.",
                              f"{c.name} is a city in the {r.choice(vocab.DIRECTIONS)} of {country.name}."))
        sentences = [first, r.choice((f"It has a population of about {info['population']:,}.",
                                      f"Around {info['population']:,} people live there."))]
        if info["river"]:
            sentences.append(f"The city lies on the {info['river']} river.")
        elif r.chance(0.5):
            sentences.append(f"It is known for its {r.choice(vocab.CITY_FEATURES)}.")
        self._mention(sentences, self.of[CITY], c, 0.3, lambda o: f"It is twinned with {o.name}.")
        return " ".join(sentences)

    def _country_text(self, c: _Entity) -> str:
        r, info = self.rand, c.info
        capital = c.facts["capital"].name
        sentences = [
            f"{c.name} is {_a(info['government'])} in {info['region']}.",
            r.choice((f"Its capital is {capital}.", f"Its capital and seat of government is {capital}.",
                      f"The capital, {capital}, lies in the {r.choice(vocab.DIRECTIONS)} of the country.")),
        ]
        others = [city.name for city in info["cities"][1:3]]
        if len(others) == 2:
            sentences.append(f"Other major cities include {others[0]} and {others[1]}.")
        self._mention(sentences, self.of[COUNTRY], c, 0.5, lambda o: f"It shares a border with {o.name}.")
        return " ".join(sentences)

    def _university_text(self, u: _Entity) -> str:
        r, info = self.rand, u.info
        city, year = u.facts["located_in"].name, u.facts["founded_year"]
        name = _ref(u)[0].upper() + _ref(u)[1:]
        kind = "technical university" if "Technology" in u.name else r.choice(
            ("public university", "private university", "research university", "university"))
        sentences = [
            r.choice((f"{name} is {_a(kind)} in {city}.", f"{name} is {_a(kind)} located in {city}.")),
            r.choice((f"It was founded in {year}.",
                      f"It was founded in {year} and has about {info['students']:,} students.",
                      f"Founded in {year}, it is known for its faculty of {info['field']}.")),
        ]
        self._mention(sentences, self.of[UNIVERSITY], u, 0.4,
                      lambda o: f"It runs an exchange programme with {_ref(o)}.")
        return " ".join(sentences)

    def _company_text(self, c: _Entity) -> str:
        r, f, info = self.rand, c.facts, c.info
        city, founder, year = f["headquartered_in"].name, f["founded_by"].name, f["founded_year"]
        description = info["description"]
        sentences = [
            r.choice((f"{c.name} is {_a(description)} headquartered in {city}.",
                      f"{c.name} is {_a(description)} with its headquarters in {city}.")),
            r.choice((f"It was founded in {year} by {founder}.", f"{founder} founded the company in {year}.",
                      f"The company was founded by {founder} in {year}.")),
        ]
        self._mention(sentences, self.companies[info["sector"]], c, 0.4, lambda o: r.choice((
            f"Its main competitor is {o.name}.", f"It was long a rival of {o.name}.")))
        if r.chance(0.4):
            sentences.append(f"It employs around {info['employees']:,} people.")
        return " ".join(sentences)

    def _band_text(self, b: _Entity) -> str:
        r, info = self.rand, b.info
        city, year = b.facts["located_in"].name, b.facts["founded_year"]
        are, they, their = ("are", "They", "their") if info["plural"] else ("is", "It", "its")
        sentences = [
            r.choice((f"{b.name} {are} {_a(info['description'])} based in {city}.",
                      f"{b.name} {are} {_a(info['description'])} from {city}, where {they.lower()} {are} based.")),
            r.choice((f"The {info['noun']} was formed in {year}.", f"{they} formed in {year}.")),
        ]
        have = "have" if info["plural"] else "has"
        self._mention(sentences, self.of[BAND], b, 0.4, lambda o: f"{they} {have} toured with {o.name}.")
        if r.chance(0.4):
            sentences.append(f"Critics hear {r.choice(vocab.MUSIC_STYLES)} music in {their} sound.")
        return " ".join(sentences)

    def _novel_text(self, n: _Entity) -> str:
        r, f, info = self.rand, n.facts, n.info
        author, year, press = f["author"].name, f["release_year"], f["publisher"].name
        sentences = r.choice((
            [f"{n.name} is a {year} novel by {author}.", f"It was published by {press}."],
            [f"{n.name} is a novel by {author}.", f"It was first published in {year} by {press}."],
            [f"{n.name} is a novel written by {author} and published by {press} in {year}."],
        ))
        sentences.append(r.choice((f"The story follows {info['protagonist']} in {info['setting'].name}.",
                                   f"Set in {info['setting'].name}, it follows {info['protagonist']}.")))
        self._mention(sentences, self.of[NOVEL], n, 0.3, lambda o: f"Critics have often compared it with {o.name}.")
        return " ".join(sentences)

    def _film_text(self, m: _Entity) -> str:
        r, f, info = self.rand, m.facts, m.info
        director, year, studio = f["director"].name, f["release_year"], f["publisher"].name
        sentences = [
            r.choice((f"{m.name} is a {year} {info['genre']} film directed by {director}.",
                      f"{m.name} is a {info['genre']} film from {year}, directed by {director}.")),
            r.choice((f"It was produced by {studio}.", f"The film was produced by {studio}.")),
            f"It stars {_and([p.name for p in info['cast']])}.",
        ]
        if r.chance(0.4):
            sentences.append(r.choice((f"It is set in {info['setting'].name}.",
                                       f"Filming took place in {info['setting'].name}.")))
        return " ".join(sentences)

    def _album_text(self, a: _Entity) -> str:
        r, f, info = self.rand, a.facts, a.info
        band, year, label = f["performer"].name, f["release_year"], f["publisher"].name
        ordinal = info["ordinal"]
        sentences = [
            f"{a.name} is the {ordinal} studio album by {band}." if ordinal else f"{a.name} is an album by {band}.",
            r.choice((f"It was released in {year} on {label}.", f"{label} released it in {year}.")),
            r.choice((f"It was recorded in {info['studio_city'].name} over {info['weeks']} weeks.",
                      f"The album was recorded in {info['studio_city'].name}.")),
        ]
        return " ".join(sentences)

    # -- questions -----------------------------------------------------------------------------

    def _questions(self, total: int) -> QADataset:
        counts = [round(share * total) for share in _HOP_SHARES]
        counts[-1] = total - sum(counts[:-1])
        items: list[QAItem] = []
        seen: set[str] = set()  # question texts and the facts asked about
        for hops, count in enumerate(counts, start=1):
            made = attempts = 0
            while made < count and attempts < 30 * count + 100:
                attempts += 1
                made_one = self._question(hops, f"world{self.seed}-{hops}hop-{made:05d}")
                if made_one is None:
                    continue
                fact, item = made_one
                if item.question not in seen and fact not in seen:
                    seen.update((item.question, fact))
                    items.append(item)
                    made += 1
        order = self.rand.gen.permutation(len(items))
        return QADataset([items[i] for i in order], name=f"world{self.seed}")

    def _start(self) -> _Entity:
        """A random entity to start a question at (see _START_CUMULATIVE)."""
        kind = _SHARES[bisect.bisect_right(_START_CUMULATIVE, self.rand.random())][0]
        return self.rand.choice(self.of[kind])

    def _question(self, hops: int, qid: str) -> tuple[str, QAItem] | None:
        """A question ``hops`` relations away from a random entity, with a key for the fact it asks
        about; None where the walk fails."""
        r = self.rand
        subjects = [self._start()]
        relations: list[_Relation] = []
        for hop in range(hops):
            subject = subjects[-1]
            options = [rel for rel in _RELATIONS_OF[subject.kind]
                       if rel.name in subject.facts and (rel.range != YEAR or hop == hops - 1)]
            if not options:
                return None
            relation = r.choice(options)
            relations.append(relation)
            value = subject.facts[relation.name]
            if value in subjects:
                return None
            subjects.append(value)
        answer = subjects.pop()
        answers = _answers(answer)
        phrase, clause = _ref(subjects[0]), False
        for hop, relation in enumerate(relations[:-1]):
            template = r.choice(_unnested(relation.phrases, hop > 0, "{x}"))
            phrase, clause = template.format(x=phrase), clause or not _is_of_phrase(template)
        question = r.choice(_unnested(relations[-1].questions, clause, "{x}?")).format(x=phrase)
        if any(a.lower() in question.lower() for a in answers):
            return None
        values = subjects[1:] + [answer]
        chain = ">".join(rel.name for rel in relations)
        return f"{subjects[0].doc_id}:{chain}", QAItem(qid, question, answers, {
            "hops": hops,
            "type": chain,
            "answer_type": relations[-1].range,
            "supporting_doc_ids": [s.doc_id for s in subjects],
            "supporting_titles": [s.name for s in subjects],
            "question_decomposition": [
                {"question": rel.questions[0].format(x=_ref(s)), "answer": _answers(v)[0]}
                for rel, s, v in zip(relations, subjects, values)
            ],
        })


def _unnested(templates: tuple[str, ...], at_end: bool, ending: str) -> tuple[str, ...]:
    """The templates to wrap a phrase in: all, or only those that end with the slot."""
    return tuple(t for t in templates if t.endswith(ending)) if at_end else templates


def _is_of_phrase(template: str) -> bool:
    """Whether a noun phrase is a plain "the <noun> of {x}", which any template may wrap."""
    return template.endswith(" of {x}") and not any(w in template for w in (" who ", " that ", " where "))


def _ref(entity: _Entity) -> str:
    """The entity's name as used inside a sentence ("the University of X")."""
    return "the " + entity.name if entity.name.startswith("University of ") else entity.name


def _answers(value: _Entity | int) -> tuple[str, ...]:
    """The canonical answer string first, then natural aliases."""
    if isinstance(value, int):
        return (str(value),)
    alias = value.info.get("alias")
    return (value.name, alias) if alias else (value.name,)
