"""A seeded synthetic knowledge base of made-up entities, for learning to search offline.

Countries, cities, companies and people get names built from random syllables, so no model knows
the facts beforehand: a question can only be answered from the corpus. Each entity is one short
passage ``{"id", "title", "text"}``; the facts link them:

- a city lies in a country and was founded in a year; each country's capital is one of its cities;
- a company is headquartered in a city and was founded in a year;
- a person was born in a year in a city and works for a company.

Questions are 1-hop (the answer is in the passage of the entity the question names: "Where was X
born?") or 2-hop (the passage of the named entity leads to a second entity whose passage holds the
answer: "In which country is the city where X was born?"). A 2-hop question is kept only when its
answer does not appear in the first passage, so it needs both. Answers are single names or years,
so exact match works. The default sizes (200 entities, about 900 questions) let a tiny model learn
to search on a CPU; everything is fixed by ``seed``.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Question and passage templates: entity names are checked never to be one of their words.
_PASSAGE_TEMPLATES = {
    "country": "{name} is a country. The capital of {name} is {capital}.",
    "city": "{name} is a city in the country of {country}. {name} was founded in {founded}.",
    "capital": " It is the capital of {country}.",
    "company": "{name} is a company headquartered in the city of {city}. {name} was founded in {founded}.",
    "person": "{name} was born in {born} in the city of {city}. {name} works for the company {company}.",
}
_QUESTION_TEMPLATES = {
    # 1-hop
    "person_born_in": "Where was {person} born?",
    "person_employer": "Which company does {person} work for?",
    "person_birth_year": "In what year was {person} born?",
    "city_country": "In which country is the city of {city}?",
    "city_founded": "In what year was the city of {city} founded?",
    "company_city": "In which city is the company {company} headquartered?",
    "company_founded": "In what year was the company {company} founded?",
    "country_capital": "What is the capital of {country}?",
    # 2-hop
    "person_birth_country": "In which country is the city where {person} was born?",
    "person_employer_city": "In which city is the company that {person} works for headquartered?",
    "person_employer_founded": "In what year was the company that {person} works for founded?",
    "company_country": "In which country is the company {company} headquartered?",
    "capital_founded": "In what year was the capital of {country} founded?",
}
_RESERVED = frozenset(
    word.lower()
    for template in [*_PASSAGE_TEMPLATES.values(), *_QUESTION_TEMPLATES.values()]
    for word in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", template))
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ae", "io")
_CODAS = ("", "n", "r", "l", "s", "th", "m", "x")


@dataclass(frozen=True)
class SyntheticKB:
    """``passages``: ``{"id", "title", "text"}`` rows. ``questions``: ``{"id", "question", "answers",
    "hops", "kind", "entity", "support"}`` rows, where ``entity`` is the passage id of the entity the
    question names and ``support`` the passage ids needed to answer, in reading order."""

    passages: list[dict[str, str]]
    questions: list[dict[str, Any]]

    def passage(self, passage_id: str) -> dict[str, str]:
        """The passage with ``passage_id``; KeyError if none."""
        for passage in self.passages:
            if passage["id"] == passage_id:
                return passage
        raise KeyError(f"no passage with id {passage_id!r}")


def generate_kb(
    *, seed: int = 0, n_countries: int = 8, n_cities: int = 40, n_companies: int = 32, n_people: int = 120
) -> SyntheticKB:
    """A knowledge base with the given numbers of entities, identical for identical arguments.

    Needs at least one country, at least as many cities as countries (every country has a capital
    city) and at least one company. Questions come in a shuffled order.
    """
    for name, value, least in [
        ("n_countries", n_countries, 1),
        ("n_cities", n_cities, n_countries),
        ("n_companies", n_companies, 1),
        ("n_people", n_people, 0),
    ]:
        if not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    rng = random.Random(seed)
    names = _NameMaker(rng)

    countries = [{"id": f"country-{i:03d}", "name": names.make()} for i in range(n_countries)]
    cities = []
    for i in range(n_cities):
        # The first cities go one per country, so every country has one to be its capital.
        country = countries[i] if i < n_countries else rng.choice(countries)
        founded = rng.randint(1100, 1899)
        cities.append({"id": f"city-{i:03d}", "name": names.make(), "country": country, "founded": founded})
    for i, country in enumerate(countries):
        country["capital"] = cities[i]
    companies = [
        {"id": f"company-{i:03d}", "name": names.make(), "city": rng.choice(cities), "founded": rng.randint(1850, 2019)}
        for i in range(n_companies)
    ]
    people = [
        {
            "id": f"person-{i:03d}",
            "name": f"{names.make()} {names.make()}",
            "city": rng.choice(cities),
            "company": rng.choice(companies),
            "born": rng.randint(1940, 2004),
        }
        for i in range(n_people)
    ]

    passages = [_country_passage(c) for c in countries]
    passages += [_city_passage(c, is_capital=c["country"]["capital"] is c) for c in cities]
    passages += [_company_passage(c) for c in companies]
    passages += [_person_passage(p) for p in people]
    text_of = {p["id"]: p["text"] for p in passages}

    candidates = []
    for person in people:
        city, company = person["city"], person["company"]
        candidates += [
            ("person_born_in", {"person": person["name"]}, city["name"], [person]),
            ("person_employer", {"person": person["name"]}, company["name"], [person]),
            ("person_birth_year", {"person": person["name"]}, str(person["born"]), [person]),
            ("person_birth_country", {"person": person["name"]}, city["country"]["name"], [person, city]),
            ("person_employer_city", {"person": person["name"]}, company["city"]["name"], [person, company]),
            ("person_employer_founded", {"person": person["name"]}, str(company["founded"]), [person, company]),
        ]
    for city in cities:
        candidates += [
            ("city_country", {"city": city["name"]}, city["country"]["name"], [city]),
            ("city_founded", {"city": city["name"]}, str(city["founded"]), [city]),
        ]
    for company in companies:
        city = company["city"]
        candidates += [
            ("company_city", {"company": company["name"]}, city["name"], [company]),
            ("company_founded", {"company": company["name"]}, str(company["founded"]), [company]),
            ("company_country", {"company": company["name"]}, city["country"]["name"], [company, city]),
        ]
    for country in countries:
        capital = country["capital"]
        candidates += [
            ("country_capital", {"country": country["name"]}, capital["name"], [country]),
            ("capital_founded", {"country": country["name"]}, str(capital["founded"]), [country, capital]),
        ]

    questions = []
    for kind, slots, answer, support in candidates:
        hops = len(support)
        if hops == 2 and _contains_word(text_of[support[0]["id"]], answer):
            continue  # answerable from the first passage alone (e.g. a birth year equal to a founding year)
        questions.append(
            {
                "question": _QUESTION_TEMPLATES[kind].format(**slots),
                "answers": [answer],
                "hops": hops,
                "kind": kind,
                "entity": support[0]["id"],
                "support": [entity["id"] for entity in support],
            }
        )
    rng.shuffle(questions)
    questions = [{"id": f"q{i:05d}", **q} for i, q in enumerate(questions)]
    return SyntheticKB(passages=passages, questions=questions)


def write_corpus(kb: SyntheticKB, path: str | os.PathLike[str]) -> Path:
    """Write the passages as JSONL (the corpus format ``envs.retrievers`` reads); returns the path."""
    return _write_jsonl(kb.passages, Path(path))


def write_questions(kb: SyntheticKB, path: str | os.PathLike[str]) -> Path:
    """Write the questions as JSONL (the format ``envs.qa_data.load_qa_dataset`` reads); returns the path."""
    return _write_jsonl(kb.questions, Path(path))


def _write_jsonl(rows: Iterable[Mapping[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


# --- passages --------------------------------------------------------------------------------


def _country_passage(country: Mapping[str, Any]) -> dict[str, str]:
    text = _PASSAGE_TEMPLATES["country"].format(name=country["name"], capital=country["capital"]["name"])
    return {"id": country["id"], "title": country["name"], "text": text}


def _city_passage(city: Mapping[str, Any], *, is_capital: bool) -> dict[str, str]:
    country = city["country"]["name"]
    text = _PASSAGE_TEMPLATES["city"].format(name=city["name"], country=country, founded=city["founded"])
    if is_capital:
        text += _PASSAGE_TEMPLATES["capital"].format(country=country)
    return {"id": city["id"], "title": city["name"], "text": text}


def _company_passage(company: Mapping[str, Any]) -> dict[str, str]:
    text = _PASSAGE_TEMPLATES["company"].format(
        name=company["name"], city=company["city"]["name"], founded=company["founded"]
    )
    return {"id": company["id"], "title": company["name"], "text": text}


def _person_passage(person: Mapping[str, Any]) -> dict[str, str]:
    text = _PASSAGE_TEMPLATES["person"].format(
        name=person["name"], born=person["born"], city=person["city"]["name"], company=person["company"]["name"]
    )
    return {"id": person["id"], "title": person["name"], "text": text}


def _contains_word(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text) is not None


# --- names -----------------------------------------------------------------------------------


class _NameMaker:
    """Unique capitalised syllable names, none a template word and none inside another (so a
    substring search for one name never finds a different entity)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.made: list[str] = []

    def make(self) -> str:
        for _ in range(10_000):
            syllables = self.rng.randint(2, 3)
            word = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(syllables))
            word += self.rng.choice(_CODAS)
            if word in _RESERVED or any(word in other or other in word for other in self.made):
                continue
            self.made.append(word)
            return word.capitalize()
        raise RuntimeError(f"could not make a new unique name after {len(self.made)} names")
