"""Who the simulated people are: names, birthdates, addresses, emails, phones, program of interest.

Northbridge University (northbridge.edu) recruits mostly in Germany (about 75 %), plus Austria,
Switzerland, the UK, France and the Netherlands. Names come from built-in lists of common German,
European and international first and last names. Addresses use real city names with plausible postcode
ranges. Personal emails are derived from the name at the providers common in each country and are
unique across the whole population; mobile numbers are unique E.164 numbers of the person's country.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect
from dataclasses import dataclass
from itertools import accumulate

from .ids import person_id, pick, rr, scramble, user_id

FIRST_NAMES = (
    "Max", "Paul", "Leon", "Felix", "Lukas", "Jonas", "Elias", "Noah", "Ben", "Finn", "Julian", "Tim",
    "Jan", "Niklas", "Moritz", "Philipp", "Tobias", "Sebastian", "Alexander", "David", "Simon", "Florian",
    "Jakob", "Johannes", "Matthias", "Stefan", "Thomas", "Michael", "Daniel", "Markus", "Jürgen", "Björn",
    "Sören", "Malte", "Henrik", "Lars", "Ole", "Mats", "Emil", "Anton", "Oskar", "Karl", "Leonie", "Emma",
    "Mia", "Hannah", "Sophia", "Lena", "Lea", "Marie", "Anna", "Laura", "Julia", "Lisa", "Sarah",
    "Katharina", "Johanna", "Clara", "Charlotte", "Amelie", "Paula", "Nele", "Luisa", "Jana", "Carolina",
    "Franziska", "Theresa", "Vanessa", "Nina", "Sophie", "Jule", "Maja", "Ida", "Greta", "Frieda", "Zoë",
    "Chloé", "Léa", "Amélie", "Élise", "Camille", "Lucas", "Hugo", "Louis", "Mathéo", "Giulia", "Francesco",
    "Lorenzo", "Sofia", "Chiara", "Matteo", "Alessandro", "Lucía", "Pablo", "Álvaro", "Mateo", "Javier",
    "Marta", "Daan", "Sem", "Thijs", "Fleur", "Sanne", "Noor", "Oliver", "George", "Harry", "Jack",
    "Olivia", "Amelia", "Isla", "Emily", "Jacob", "James", "William", "Ella", "Mehmet", "Ayşe", "Elif",
    "Emre", "Can", "Zeynep", "Yusuf", "Ali", "Fatma", "Deniz", "Piotr", "Katarzyna", "Jakub", "Tomasz",
    "Agnieszka", "Ivan", "Olena", "Dmytro", "Andrei", "Ioana", "Mihai", "Nikos", "Eleni", "Priya", "Arjun",
    "Rahul", "Ananya", "Wei", "Li", "Chen", "Mei", "Kenji", "Yuki", "Omar", "Layla", "Ahmed", "Amir",
    "Sara", "Lina", "Kwame", "Amara", "Chidi", "Ngozi", "Santiago", "Valentina", "Gabriel", "Isabella",
    "Mariana",
)

LAST_NAMES = (
    "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
    "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
    "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
    "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber",
    "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Schubert", "Vogel",
    "Friedrich", "Keller", "Günther", "Frank", "Berger", "Winkler", "Roth", "Beck", "Lorenz", "Baumann",
    "Franke", "Albrecht", "Schuster", "Simon", "Ludwig", "Böhm", "Winter", "Kraus", "Martin", "Schumacher",
    "Krämer", "Vogt", "Stein", "Jäger", "Otto", "Sommer", "Groß", "Seidel", "Heinrich", "Brandt", "Haas",
    "Schreiber", "Graf", "Schulte", "Dietrich", "Ziegler", "Kuhn", "Kühn", "Pohl", "Engel", "Horn", "Busch",
    "Bergmann", "Thomas", "Voigt", "Sauer", "Arnold", "Wolff", "Pfeiffer", "Gruber", "Steiner", "Moser",
    "Hofer", "Brunner", "Gerber", "Baumgartner", "Dubois", "Bernard", "Moreau", "Laurent", "Lefèvre",
    "Garnier", "de Jong", "Jansen", "de Vries", "van den Berg", "Bakker", "Visser", "Smith", "Jones",
    "Williams", "Brown", "Taylor", "Davies", "Evans", "Wilson", "Rossi", "Russo", "Bianchi", "Romano",
    "García", "Fernández", "López", "Martínez", "Sánchez", "Yılmaz", "Kaya", "Demir", "Şahin", "Çelik",
    "Öztürk", "Nowak", "Kowalski", "Wiśniewski", "Kovačević", "Horvat", "Novak", "Popescu", "Ionescu",
    "Papadopoulos", "Kumar", "Sharma", "Patel", "Singh", "Wang", "Zhang", "Liu", "Tanaka", "Sato",
    "Nakamura", "Haddad", "Khalil", "Hassan", "Okafor", "Mensah", "Silva", "Santos", "Oliveira", "Pereira",
)


@dataclass(frozen=True)
class Program:
    key: str  # path slug, used in events (program / course properties)
    name: str  # Salesforce Program_Interest__c and human-readable name
    title: str  # web page title
    weight: float
    age_range: tuple[int, int]


PROGRAMS = (
    Program("mba", "MBA", "MBA | Northbridge University", 0.25, (26, 42)),
    Program("msc-data-science", "MSc Data Science", "MSc Data Science | Northbridge University", 0.25,
            (22, 33)),
    Program("msc-finance", "MSc Finance", "MSc Finance | Northbridge University", 0.15, (22, 32)),
    Program("bsc-business", "BSc Business", "BSc Business | Northbridge University", 0.20, (18, 25)),
    Program("executive-education", "Executive Education", "Executive Education | Northbridge University",
            0.15, (32, 58)),
)
_PROGRAM_CUM = list(accumulate(p.weight for p in PROGRAMS))


@dataclass(frozen=True)
class City:
    name: str
    state: str | None
    postcode: tuple  # (low, high) numeric range, or a UK/NL pattern marker
    area_code: str
    weight: float


@dataclass(frozen=True)
class Country:
    iso2: str
    name: str  # Salesforce MailingCountry
    cc: str  # calling code digits
    base_utc_offset: int
    weight: float
    cities: tuple[City, ...]
    mobile_prefixes: tuple[str, ...]
    subscriber_digits: int
    national_groups: tuple[int, ...]  # digit-group lengths of the national format after the leading 0
    providers: tuple[tuple[str, float], ...]
    streets: tuple[str, ...]
    house_number_first: bool


def _c(name: str, state: str | None, lo: int, hi: int, area: str, w: float) -> City:
    return City(name, state, (lo, hi), area, w)


COUNTRIES = (
    Country(
        "DE", "Germany", "49", 1, 0.75,
        (
            _c("Berlin", "Berlin", 10115, 14199, "30", 3.7),
            _c("Hamburg", "Hamburg", 20095, 22769, "40", 1.9),
            _c("München", "Bayern", 80331, 81929, "89", 1.5),
            _c("Köln", "Nordrhein-Westfalen", 50667, 51149, "221", 1.1),
            _c("Frankfurt am Main", "Hessen", 60306, 60599, "69", 0.8),
            _c("Stuttgart", "Baden-Württemberg", 70173, 70629, "711", 0.6),
            _c("Düsseldorf", "Nordrhein-Westfalen", 40210, 40629, "211", 0.6),
            _c("Leipzig", "Sachsen", 4103, 4357, "341", 0.6),
            _c("Dresden", "Sachsen", 1067, 1328, "351", 0.55),
            _c("Hannover", "Niedersachsen", 30159, 30669, "511", 0.55),
            _c("Nürnberg", "Bayern", 90402, 90491, "911", 0.5),
            _c("Bremen", "Bremen", 28195, 28779, "421", 0.55),
            _c("Essen", "Nordrhein-Westfalen", 45127, 45359, "201", 0.55),
            _c("Mannheim", "Baden-Württemberg", 68159, 68309, "621", 0.3),
            _c("Münster", "Nordrhein-Westfalen", 48143, 48167, "251", 0.3),
            _c("Freiburg im Breisgau", "Baden-Württemberg", 79098, 79117, "761", 0.25),
        ),
        ("151", "152", "157", "160", "162", "163", "170", "171", "172", "173", "174", "175", "176", "177",
         "178", "179"),
        8, (3, 8),
        (("gmail.com", 30), ("web.de", 20), ("gmx.de", 20), ("outlook.com", 9), ("t-online.de", 7),
         ("yahoo.com", 4), ("icloud.com", 7), ("posteo.de", 1), ("hotmail.de", 2)),
        ("Hauptstraße", "Bahnhofstraße", "Gartenstraße", "Schulstraße", "Dorfstraße", "Bergstraße",
         "Lindenstraße", "Kirchstraße", "Goethestraße", "Schillerstraße", "Friedrichstraße",
         "Berliner Straße",
         "Mozartstraße", "Ringstraße", "Am Markt", "Rosenweg", "Waldstraße", "Wilhelmstraße"),
        False,
    ),
    Country(
        "AT", "Austria", "43", 1, 0.07,
        (_c("Wien", "Wien", 1010, 1230, "1", 2.0), _c("Graz", "Steiermark", 8010, 8054, "316", 0.3),
         _c("Linz", "Oberösterreich", 4020, 4040, "732", 0.2),
         _c("Salzburg", "Salzburg", 5020, 5026, "662", 0.15),
         _c("Innsbruck", "Tirol", 6020, 6080, "512", 0.13)),
        ("650", "660", "664", "676", "680", "681", "688", "699"),
        7, (4, 7),
        (("gmail.com", 35), ("gmx.at", 25), ("outlook.com", 12), ("aon.at", 8), ("icloud.com", 8),
         ("yahoo.com", 4), ("a1.net", 8)),
        ("Mariahilfer Straße", "Landstraßer Hauptstraße", "Herrengasse", "Hauptplatz", "Bahnhofstraße",
         "Schillerplatz", "Kärntner Straße"),
        False,
    ),
    Country(
        "CH", "Switzerland", "41", 1, 0.06,
        (_c("Zürich", "ZH", 8001, 8064, "44", 0.45), _c("Genève", "GE", 1201, 1209, "22", 0.2),
         _c("Basel", "BS", 4001, 4059, "61", 0.18), _c("Bern", "BE", 3001, 3030, "31", 0.14),
         _c("Lausanne", "VD", 1003, 1018, "21", 0.14)),
        ("75", "76", "77", "78", "79"),
        7, (3, 3, 2, 2),
        (("gmail.com", 35), ("bluewin.ch", 25), ("gmx.ch", 10), ("outlook.com", 12), ("icloud.com", 10),
         ("hispeed.ch", 5), ("yahoo.com", 3)),
        ("Bahnhofstrasse", "Seestrasse", "Dorfstrasse", "Hauptstrasse", "Kirchweg", "Rue du Rhône"),
        False,
    ),
    Country(
        "GB", "United Kingdom", "44", 0, 0.04,
        (City("London", None, ("UK", ["N", "E", "SE", "SW", "W", "NW", "EC", "WC"]), "20", 3.0),
         City("Manchester", None, ("UK", ["M"]), "161", 0.6),
         City("Birmingham", None, ("UK", ["B"]), "121", 0.8),
         City("Edinburgh", None, ("UK", ["EH"]), "131", 0.5)),
        ("740", "750", "770", "780", "790", "791", "794", "795"),
        7, (5, 6),
        (("gmail.com", 40), ("outlook.com", 15), ("hotmail.co.uk", 15), ("yahoo.co.uk", 10),
         ("icloud.com", 10),
         ("btinternet.com", 10)),
        ("High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue", "Green Lane"),
        True,
    ),
    Country(
        "FR", "France", "33", 1, 0.04,
        (_c("Paris", "Île-de-France", 75001, 75020, "1", 2.1),
         _c("Lyon", "Auvergne-Rhône-Alpes", 69001, 69009, "4", 0.5),
         _c("Marseille", "Provence-Alpes-Côte d'Azur", 13001, 13016, "4", 0.8),
         _c("Toulouse", "Occitanie", 31000, 31500, "5", 0.5)),
        ("6", "7"),
        8, (2, 2, 2, 2, 2),
        (("gmail.com", 40), ("orange.fr", 20), ("free.fr", 12), ("outlook.fr", 10), ("sfr.fr", 8),
         ("laposte.net", 5), ("yahoo.fr", 5)),
        ("rue de la Paix", "avenue Victor Hugo", "rue de la République", "boulevard Saint-Michel",
         "rue du Moulin", "place de la Mairie"),
        True,
    ),
    Country(
        "NL", "Netherlands", "31", 1, 0.04,
        (City("Amsterdam", "Noord-Holland", ("NL", 1011, 1109), "20", 0.9),
         City("Rotterdam", "Zuid-Holland", ("NL", 3011, 3089), "10", 0.65),
         City("Utrecht", "Utrecht", ("NL", 3511, 3585), "30", 0.36),
         City("Den Haag", "Zuid-Holland", ("NL", 2511, 2597), "70", 0.55)),
        ("6",),
        8, (1, 8),
        (("gmail.com", 40), ("outlook.com", 15), ("hotmail.nl", 15), ("ziggo.nl", 10), ("kpnmail.nl", 8),
         ("icloud.com", 7), ("live.nl", 5)),
        ("Kerkstraat", "Dorpsstraat", "Prinsengracht", "Stationsweg", "Molenweg", "Schoolstraat"),
        False,
    ),
)
_COUNTRY_CUM = list(accumulate(c.weight for c in COUNTRIES))
_CITY_CUM = {c.iso2: list(accumulate(city.weight for city in c.cities)) for c in COUNTRIES}
_PROVIDER_CUM = {c.iso2: list(accumulate(w for _, w in c.providers)) for c in COUNTRIES}
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

_TRANSLIT = str.maketrans({
    "ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ê": "e", "ë": "e", "á": "a", "à": "a",
    "â": "a", "å": "a", "ç": "c", "ñ": "n", "ó": "o", "ò": "o", "ô": "o", "ø": "o", "í": "i", "ì": "i",
    "ı": "i", "ú": "u", "ù": "u", "ş": "s", "ğ": "g", "ć": "c", "č": "c", "š": "s", "ž": "z", "ł": "l",
    "ś": "s", "ń": "n", "ź": "z", "ż": "z", " ": "", "'": "",
})


def _pick(rng: random.Random, items: tuple | list, cum: list[float]):
    return items[bisect(cum, rng.random() * cum[-1])]


def ascii_name(name: str) -> str:
    return name.lower().translate(_TRANSLIT)


class EmailFactory:
    """Unique personal emails without coordination between chunks.

    A digit-free address (``max.mueller@gmail.com``) may only be taken by the chunk that "owns" it
    (CRC32 of the address modulo the number of chunks); an address with a number uses a number that
    is congruent to the chunk index modulo the number of chunks. Within the chunk a set catches the rest.
    """

    def __init__(self, rng: random.Random, chunk_index: int, n_chunks: int) -> None:
        self.rng = rng
        self.chunk = chunk_index
        self.n = n_chunks
        self.used: set[str] = set()

    def make(self, first: str, last: str, country: Country, birth_year: int, avoid: str = "") -> str:
        rng = self.rng
        f, la = ascii_name(first), ascii_name(last)
        r = rng.random()
        if r < 0.45:
            local = f"{f}.{la}"
        elif r < 0.6:
            local = f"{f}{la}"
        elif r < 0.72:
            local = f"{f[0]}.{la}"
        elif r < 0.8:
            local = f"{f}_{la}"
        elif r < 0.88:
            local = f"{la}.{f}"
        else:
            local = f"{f}.{la[0]}"
        attempt = 0
        while True:
            attempt += 1
            domain = _pick(rng, country.providers, _PROVIDER_CUM[country.iso2])[0]
            if attempt <= 3 and rng.random() < 0.4:
                email = f"{local}@{domain}"
                owned = zlib.crc32(email.encode()) % self.n == self.chunk
                if owned and email not in self.used and email != avoid:
                    break
            # a number like a birth year or a small counter, forced into this chunk's residue class;
            # the range widens with every failed attempt so a crowded name always finds a free address
            base = birth_year % 100 if attempt == 1 and rng.random() < 0.4 else rr(rng, 1, 999 * attempt)
            number = base - base % self.n + self.chunk
            email = f"{local}{number}@{domain}"
            if email not in self.used and email != avoid:
                break
        self.used.add(email)
        return email


class Person:
    """One simulated person; journey attributes are filled in by :mod:`.journey`."""

    __slots__ = (
        "accept_t", "active_t", "anon_only", "birth_year", "birthdate", "burst_t", "city", "country",
        "crm_created_t", "email", "end_t", "enrollment", "first", "first_touch", "idx", "inquiry_t", "landline",
        "landline_e164", "last", "mobile_digits", "mobile_e164", "offer_t", "offline", "phone_known",
        "phone_t", "pid", "postcode", "program", "stage", "start_t", "state", "street", "submit_t", "user_id",
        "web",
    )

    def __init__(self) -> None:
        self.phone_known = False  # set once the phone was given on a web form or is in the CRM
        self.phone_t = None

    def mobile_written(self, rng: random.Random, national_rate: float) -> str:
        """The mobile number as a person or an advisor would type it: E.164 or national format."""
        if rng.random() < national_rate:
            return national_format(self.country, self.mobile_digits)
        return self.mobile_e164


def national_format(country: Country, digits: str) -> str:
    """``0151 23456789`` style national format of the national significant number ``digits``."""
    groups = country.national_groups
    out = []
    pos = 0
    for i, g in enumerate(groups):
        part = digits[pos : pos + g] if i < len(groups) - 1 else digits[pos:]
        out.append(part)
        pos += g
    return "0" + " ".join(p for p in out if p)


def _postcode(rng: random.Random, city: City, width: int) -> str:
    spec = city.postcode
    if spec[0] == "UK":
        district = pick(rng, spec[1])
        return f"{district}{rr(rng, 1, 21)} {rr(rng, 1, 10)}{pick(rng, _LETTERS)}{pick(rng, _LETTERS)}"
    if spec[0] == "NL":
        return f"{rr(rng, spec[1], spec[2] + 1)} {pick(rng, _LETTERS)}{pick(rng, _LETTERS)}"
    lo, hi = spec
    return f"{rr(rng, lo, hi + 1):0{width}d}"


class PopulationContext:
    """Per-chunk state for making people: the RNG, the email factory, seed-derived scramble offsets."""

    def __init__(self, rng: random.Random, seed: int, chunk_index: int, n_chunks: int) -> None:
        self.rng = rng
        self.emails = EmailFactory(rng, chunk_index, n_chunks)
        seeded = random.Random(f"northbridge-numbers:{seed}")
        self.mobile_offset = seeded.randrange(10**8)
        self.landline_offset = seeded.randrange(10**7)
        self.user_offset = seeded.randrange(10**8)

    def make_person(self, index: int) -> Person:
        rng = self.rng
        p = Person()
        p.idx = index
        p.pid = person_id(index)
        p.first = pick(rng, FIRST_NAMES)
        p.last = pick(rng, LAST_NAMES)
        country = _pick(rng, COUNTRIES, _COUNTRY_CUM)
        p.country = country
        city = _pick(rng, country.cities, _CITY_CUM[country.iso2])
        p.city = city
        p.state = city.state if country.iso2 != "DE" or rng.random() < 0.5 else None
        p.postcode = _postcode(rng, city, 5 if country.iso2 in ("DE", "FR") else 4)
        number = f"{rr(rng, 1, 141)}{'' if rng.random() < 0.9 else pick(rng, 'abc')}"
        street = pick(rng, country.streets)
        p.street = f"{number} {street}" if country.house_number_first else f"{street} {number}"
        program = _pick(rng, PROGRAMS, _PROGRAM_CUM)
        p.program = program
        age = rr(rng, program.age_range[0], program.age_range[1] + 1)
        p.birth_year = 2026 - age
        p.birthdate = f"{p.birth_year}-{rr(rng, 1, 13):02d}-{rr(rng, 1, 29):02d}"
        p.email = self.emails.make(p.first, p.last, country, p.birth_year)
        modulus = 10**country.subscriber_digits
        sub = scramble(index, modulus, 7_368_787, self.mobile_offset % modulus)
        p.mobile_digits = f"{pick(rng, country.mobile_prefixes)}{sub:0{country.subscriber_digits}d}"
        p.mobile_e164 = f"+{country.cc}{p.mobile_digits}"
        if rng.random() < 0.3:
            land = scramble(index, 10**7, 3_141_593, self.landline_offset)
            p.landline = f"+{country.cc} {city.area_code} {land:07d}"
            p.landline_e164 = f"+{country.cc}{city.area_code}{land:07d}"
        else:
            p.landline = p.landline_e164 = None
        p.user_id = user_id(index, self.user_offset)
        return p


def typo(rng: random.Random, name: str) -> str:
    """A plausible typing error: swap two adjacent letters, drop one, or double one."""
    if len(name) < 3:
        return name + name[-1]
    i = rr(rng, 1, len(name) - 1)
    kind = rr(rng, 3)
    if kind == 0 and name[i] != name[i + 1]:
        return name[:i] + name[i + 1] + name[i] + name[i + 2 :]
    if kind == 1:
        return name[:i] + name[i + 1 :]
    return name[:i] + name[i] + name[i:]


def email_variant(rng: random.Random, email: str, whitespace: bool = True) -> str:
    """The same address written differently: capitalised parts, upper-case domain, stray spaces."""
    local, _, domain = email.partition("@")
    kind = rr(rng, 3 if whitespace else 2)
    if kind == 0:
        v = ".".join(part[:1].upper() + part[1:] for part in local.split(".")) + "@" + domain.capitalize()
    elif kind == 1:
        v = email.upper() if rng.random() < 0.3 else local.capitalize() + "@" + domain.upper()
    else:
        v = f"{' ' * rr(rng, 1, 3)}{email}{' ' * rr(rng, 0, 2)}"
    return v if v != email else email.upper()


def norm_email(value: str) -> str:
    return value.strip().lower()
