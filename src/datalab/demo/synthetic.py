"""Deterministic, realistic synthetic Data Lab export files (student lists, ACT score reports) for demos."""

from __future__ import annotations

import csv
import datetime
import functools
import math
import pathlib
import random
import unicodedata
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from datalab.exports.models import PRODUCT_KEYS
from datalab.layouts.cleansing import shift_years

_SCORE_REPORTER = "score-reporter"

_INQUIRY_HEADER: tuple[str, ...] = (
    "DATSOURCE",
    "SEQUENCE",
    "STUDENTPIN",
    "FIRSTNAME",
    "MIDDLEINITIAL",
    "LASTNAME",
    "ADDRESS",
    "ADDRESS2",
    "CITY",
    "STATE",
    "POSTALCODE",
    "ZIP4",
    "EMAIL",
    "PHONE",
    "CELLPHONE",
    "HIGHSCHOOLNAME",
    "HIGHSCHOOLTYPE",
    "CEEB",
    "BIRTHDATE",
    "GENDER",
    "GRADUATIONYEAR",
    "GPA",
    *(f"CTYPE{i:02d}" for i in range(1, 5)),
    *(f"MAJOR{i:02d}" for i in range(1, 3)),
    *(f"ACTIVITY{i:02d}" for i in range(1, 9)),
)

_SCORE_REPORT_HEADER: tuple[str, ...] = (
    "ACTID",
    "FIRSTNAME",
    "MIDDLEINITIAL",
    "LASTNAME",
    "ADDRESS",
    "CITY",
    "STATE",
    "ZIPCODE",
    "BIRTHDATE",
    "TESTDATE",
    "HSCODE",
    "HSGRADYEAR",
    "GPA",
    "INTENDEDMAJOR",
    "COMPOSITE",
    "MATH",
    "SCIENCE",
    "ENGLISH",
    "READING",
    "WRITING",
    "STEM",
    "ELA",
)

# Rows are drawn column-wise in fixed-size chunks: far fewer Python-level RNG calls than per-field draws, and
# because every chunk is drawn in full before truncation, a smaller file is always a prefix of a larger one.
_CHUNK = 1024

# fmt: off
# CEEB/ACT high-school codes start with a two-digit state prefix (alphabetical by state, DC included),
# which is why codes from AL..DC carry leading zeros.
_CEEB_STATE_PREFIX: dict[str, str] = {
    st: f"{i:02d}"
    for i, st in enumerate(
        (
            "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
            "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
            "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
            "WV", "WI", "WY",
        ),
        start=1,
    )
}

_HOME_SCHOOL_CEEB = "970000"

# (city, state, first three ZIP digits, area code, relative population weight)
_Location = tuple[str, str, str, str, int]
_LOCATIONS: tuple[_Location, ...] = (
    ("Boston", "MA", "021", "617", 4),
    ("Cambridge", "MA", "021", "617", 2),
    ("Quincy", "MA", "021", "617", 1),
    ("Newton", "MA", "024", "617", 2),
    ("Lowell", "MA", "018", "978", 1),
    ("Worcester", "MA", "016", "508", 2),
    ("Springfield", "MA", "011", "413", 1),
    ("Hartford", "CT", "061", "860", 2),
    ("New Haven", "CT", "065", "203", 2),
    ("Stamford", "CT", "069", "203", 2),
    ("Bridgeport", "CT", "066", "203", 1),
    ("Waterbury", "CT", "067", "203", 1),
    ("Newark", "NJ", "071", "973", 2),
    ("Jersey City", "NJ", "073", "201", 2),
    ("Hoboken", "NJ", "070", "201", 1),
    ("Paterson", "NJ", "075", "973", 1),
    ("Trenton", "NJ", "086", "609", 1),
    ("Princeton", "NJ", "085", "609", 1),
    ("Camden", "NJ", "081", "856", 1),
    ("Edison", "NJ", "088", "732", 2),
    ("Providence", "RI", "029", "401", 2),
    ("Warwick", "RI", "028", "401", 1),
    ("Portland", "ME", "041", "207", 1),
    ("Bangor", "ME", "044", "207", 1),
    ("Burlington", "VT", "054", "802", 1),
    ("Manchester", "NH", "031", "603", 1),
    ("Nashua", "NH", "030", "603", 1),
    ("New York", "NY", "100", "212", 5),
    ("Brooklyn", "NY", "112", "718", 5),
    ("Buffalo", "NY", "142", "716", 2),
    ("Rochester", "NY", "146", "585", 2),
    ("Albany", "NY", "122", "518", 1),
    ("Syracuse", "NY", "132", "315", 1),
    ("Philadelphia", "PA", "191", "215", 4),
    ("Pittsburgh", "PA", "152", "412", 3),
    ("Harrisburg", "PA", "171", "717", 1),
    ("Allentown", "PA", "181", "610", 1),
    ("Wilmington", "DE", "198", "302", 1),
    ("Baltimore", "MD", "212", "410", 3),
    ("Bethesda", "MD", "208", "301", 2),
    ("Washington", "DC", "200", "202", 3),
    ("Arlington", "VA", "222", "703", 2),
    ("Richmond", "VA", "232", "804", 2),
    ("Norfolk", "VA", "235", "757", 2),
    ("Charleston", "WV", "253", "304", 1),
    ("Morgantown", "WV", "265", "304", 1),
    ("Charlotte", "NC", "282", "704", 3),
    ("Raleigh", "NC", "276", "919", 3),
    ("Durham", "NC", "277", "919", 2),
    ("Columbia", "SC", "292", "803", 2),
    ("Charleston", "SC", "294", "843", 2),
    ("Atlanta", "GA", "303", "404", 4),
    ("Savannah", "GA", "314", "912", 1),
    ("Jacksonville", "FL", "322", "904", 3),
    ("Miami", "FL", "331", "305", 4),
    ("Orlando", "FL", "328", "407", 3),
    ("Tampa", "FL", "336", "813", 3),
    ("Tallahassee", "FL", "323", "850", 1),
    ("Birmingham", "AL", "352", "205", 2),
    ("Nashville", "TN", "372", "615", 3),
    ("Memphis", "TN", "381", "901", 2),
    ("Knoxville", "TN", "379", "865", 1),
    ("Louisville", "KY", "402", "502", 2),
    ("Lexington", "KY", "405", "859", 2),
    ("Columbus", "OH", "432", "614", 3),
    ("Cleveland", "OH", "441", "216", 3),
    ("Cincinnati", "OH", "452", "513", 3),
    ("Detroit", "MI", "482", "313", 3),
    ("Ann Arbor", "MI", "481", "734", 1),
    ("Grand Rapids", "MI", "495", "616", 2),
    ("Indianapolis", "IN", "462", "317", 3),
    ("Chicago", "IL", "606", "312", 5),
    ("Springfield", "IL", "627", "217", 1),
    ("Milwaukee", "WI", "532", "414", 2),
    ("Madison", "WI", "537", "608", 2),
    ("Minneapolis", "MN", "554", "612", 3),
    ("Saint Paul", "MN", "551", "651", 2),
    ("Des Moines", "IA", "503", "515", 2),
    ("St. Louis", "MO", "631", "314", 3),
    ("Kansas City", "MO", "641", "816", 3),
    ("Omaha", "NE", "681", "402", 2),
    ("Lincoln", "NE", "685", "402", 1),
    ("Wichita", "KS", "672", "316", 2),
    ("Oklahoma City", "OK", "731", "405", 2),
    ("Tulsa", "OK", "741", "918", 2),
    ("Dallas", "TX", "752", "214", 4),
    ("Houston", "TX", "770", "713", 5),
    ("Austin", "TX", "787", "512", 4),
    ("San Antonio", "TX", "782", "210", 4),
    ("El Paso", "TX", "799", "915", 2),
    ("New Orleans", "LA", "701", "504", 2),
    ("Baton Rouge", "LA", "708", "225", 2),
    ("Jackson", "MS", "392", "601", 1),
    ("Little Rock", "AR", "722", "501", 1),
    ("Denver", "CO", "802", "303", 3),
    ("Boulder", "CO", "803", "303", 1),
    ("Colorado Springs", "CO", "809", "719", 2),
    ("Salt Lake City", "UT", "841", "801", 2),
    ("Albuquerque", "NM", "871", "505", 2),
    ("Phoenix", "AZ", "850", "602", 4),
    ("Tucson", "AZ", "857", "520", 2),
    ("Las Vegas", "NV", "891", "702", 3),
    ("Reno", "NV", "895", "775", 1),
    ("Boise", "ID", "837", "208", 1),
    ("Billings", "MT", "591", "406", 1),
    ("Cheyenne", "WY", "820", "307", 1),
    ("Fargo", "ND", "581", "701", 1),
    ("Sioux Falls", "SD", "571", "605", 1),
    ("Seattle", "WA", "981", "206", 3),
    ("Spokane", "WA", "992", "509", 1),
    ("Portland", "OR", "972", "503", 3),
    ("Eugene", "OR", "974", "541", 1),
    ("Los Angeles", "CA", "900", "213", 5),
    ("San Diego", "CA", "921", "619", 4),
    ("San Jose", "CA", "951", "408", 3),
    ("San Francisco", "CA", "941", "415", 3),
    ("Oakland", "CA", "946", "510", 2),
    ("Sacramento", "CA", "958", "916", 3),
    ("Fresno", "CA", "937", "559", 2),
    ("Anchorage", "AK", "995", "907", 1),
    ("Honolulu", "HI", "968", "808", 1),
)

# Accented and multi-part names are kept on purpose so exports exercise UTF-8 and e-mail normalisation.
_FEMALE_NAMES: tuple[str, ...] = (
    "Olivia", "Emma", "Charlotte", "Amelia", "Sophia", "Mia", "Isabella", "Ava", "Evelyn", "Luna", "Harper",
    "Camila", "Sofia", "Scarlett", "Elizabeth", "Eleanor", "Emily", "Chloe", "Mila", "Violet", "Penelope",
    "Gianna", "Aria", "Abigail", "Ella", "Avery", "Hazel", "Nora", "Layla", "Lily", "Aurora", "Nova", "Ellie",
    "Madison", "Grace", "Isla", "Willow", "Zoe", "Riley", "Stella", "Victoria", "Hannah", "Addison", "Leah",
    "Lucy", "Eliana", "Ivy", "Everly", "Lillian", "Paisley", "Elena", "Naomi", "Maya", "Natalie", "Kinsley",
    "Delilah", "Claire", "Audrey", "Aaliyah", "Ruby", "Brooklyn", "Alice", "Aubrey", "Autumn", "Leilani",
    "Savannah", "Valentina", "Kennedy", "Madelyn", "Josephine", "Bella", "Skylar", "Genesis", "Sophie",
    "Hailey", "Sadie", "Natalia", "Quinn", "Caroline", "Allison", "Gabriella", "Anna", "Serenity", "Nevaeh",
    "Cora", "Ariana", "Emery", "Lydia", "Jade", "Sarah", "Eva", "Adeline", "Madeline", "Piper", "Rylee",
    "Athena", "Peyton", "Everleigh", "Vivian", "Clara", "Raelynn", "Liliana", "Samantha", "Maria", "Iris",
    "Ayla", "Eloise", "Lyla", "Eliza", "Jasmine", "Priya", "Mei", "Yuna", "Fatima", "Amara", "Ximena",
    "Guadalupe", "Daniela", "Keisha", "Imani", "Destiny", "Jocelyn", "Ngozi", "Ananya", "Sofía", "Zoë",
    "Chloé", "Renée", "María José", "Ana Lucía",
)
_MALE_NAMES: tuple[str, ...] = (
    "Liam", "Noah", "Oliver", "James", "Elijah", "William", "Henry", "Lucas", "Benjamin", "Theodore", "Mateo",
    "Levi", "Sebastian", "Daniel", "Jack", "Michael", "Alexander", "Owen", "Asher", "Samuel", "Ethan", "Leo",
    "Jackson", "Mason", "Ezra", "John", "Hudson", "Luca", "Aiden", "Joseph", "David", "Jacob", "Logan",
    "Luke", "Julian", "Gabriel", "Grayson", "Wyatt", "Matthew", "Maverick", "Dylan", "Isaac", "Elias",
    "Anthony", "Thomas", "Jayden", "Carter", "Santiago", "Ezekiel", "Charles", "Josiah", "Caleb", "Cooper",
    "Lincoln", "Miles", "Christopher", "Nathan", "Isaiah", "Kai", "Joshua", "Andrew", "Angel", "Adrian",
    "Cameron", "Nolan", "Waylon", "Jaxon", "Roman", "Eli", "Wesley", "Aaron", "Ian", "Christian", "Ryan",
    "Leonardo", "Brooks", "Axel", "Walker", "Jonathan", "Easton", "Everett", "Weston", "Bennett", "Robert",
    "Jameson", "Landon", "Silas", "Jose", "Beau", "Micah", "Colton", "Jordan", "Jeremiah", "Parker",
    "Greyson", "Rowan", "Adam", "Nicholas", "Theo", "Xavier", "Hunter", "Dominic", "Jace", "Gael", "Austin",
    "Vincent", "Diego", "Marcus", "Malik", "Darnell", "Tyrone", "Andre", "Jamal", "Hiroshi", "Kenji", "Wei",
    "Arjun", "Rohan", "Omar", "Ahmed", "Tariq", "Chukwuemeka", "Kwame", "Dmitri", "Mohammed", "José",
    "Andrés", "Matías", "Juan Carlos", "André",
)
_LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
    "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
    "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
    "Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green",
    "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez",
    "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes", "Stewart",
    "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson",
    "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson", "Brooks",
    "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez", "Castillo",
    "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell",
    "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez",
    "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham", "Reynolds", "Griffin",
    "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant", "Herrera", "Gibson", "Ellis", "Tran", "Medina",
    "Aguilar", "Stevens", "Murray", "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez",
    "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb",
    "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon", "Mendez",
    "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Munoz", "Hunt", "Hicks", "Holmes", "Palmer", "Wagner",
    "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox", "Warren", "Mills", "Meyer", "Rice",
    "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens", "Soto", "Weaver", "Ryan", "Gardner",
    "Payne", "Grant", "Dunn", "Kelley", "Spencer", "Hawkins", "Arnold", "Pierce", "Vazquez", "Hansen",
    "Peters", "Santos", "Hart", "Bradley", "Knight", "Elliott", "Cunningham", "Duncan", "Armstrong", "Hudson",
    "Carroll", "Lane", "Riley", "Andrews", "Alvarado", "Ray", "Delgado", "Berry", "Perkins", "Hoffman",
    "Johnston", "Matthews", "Pena", "Richards", "Contreras", "Willis", "Carpenter", "Lawrence", "Sandoval",
    "Wang", "Li", "Zhang", "Liu", "Yang", "Huang", "Singh", "Kumar", "Shah", "Tanaka", "Suzuki", "Yamamoto",
    "Park", "Choi", "Pham", "Le", "Hoang", "Vu", "Okafor", "Adeyemi", "Mensah", "Haddad", "Khalil", "Cohen",
    "Goldberg", "Levy", "Kowalski", "Novak", "Rossi", "Russo", "Ferrari", "Schneider", "Fischer", "Weber",
    "Becker", "Dubois", "Larsen", "Nielsen", "Petrov", "Ivanov", "O'Brien", "O'Connor", "O'Neill", "McCarthy",
    "Fitzgerald", "Gallagher", "Doyle", "Muñoz", "Peña", "Núñez", "Ibáñez", "De La Cruz", "Van Buren",
    "St. Clair", "Smith-Jones", "Lopez-Garcia",
)

_STREET_NAMES: tuple[str, ...] = (
    "Main", "Oak", "Maple", "Pine", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Walnut",
    "Chestnut", "Spruce", "Willow", "Ridge", "Church", "Highland", "Jefferson", "Lincoln", "Madison",
    "Franklin", "Adams", "Jackson", "Sunset", "Meadow", "Forest", "River", "Spring", "Center", "Cherry",
    "Birch", "Dogwood", "Magnolia", "Laurel", "Hickory", "Sycamore", "Valley", "Prospect", "Union",
    "Pleasant", "Mill", "Summit", "Grove", "Broad", "Market", "Water", "School", "College", "Academy",
    "Orchard", "Fairview", "Woodland", "Lakeview", "Riverside", "Hillcrest", "Greenwood", "Kingston",
    "Wilson", "Monroe", "Harrison", "Cleveland", "Grant", "Liberty",
)
# Repeats weight the common suffixes.
_STREET_SUFFIXES: tuple[str, ...] = (
    "St", "St", "St", "Ave", "Ave", "Ave", "Rd", "Rd", "Dr", "Dr", "Ln", "Ct", "Blvd", "Way", "Pl", "Ter",
    "Cir",
)

_EMAIL_DOMAINS: tuple[str, ...] = (
    ("gmail.com",) * 14 + ("yahoo.com",) * 3 + ("icloud.com",) * 4 + ("outlook.com",) * 2
    + ("hotmail.com", "aol.com", "comcast.net", "protonmail.com")
)

_EMAIL_PATTERNS: tuple[str, ...] = (
    "{f}.{l}", "{f}.{l}", "{f}{l}{yy}", "{i}{l}{n}", "{f}_{l}", "{f}.{l}{n}", "{l}.{f}", "{f}{l}", "{f}{n}",
)

_MAJORS: tuple[str, ...] = (
    "Biology", "Business Administration", "Computer Science", "Nursing", "Psychology", "Engineering",
    "Mechanical Engineering", "Electrical Engineering", "Civil Engineering", "Biomedical Engineering",
    "Chemistry", "Mathematics", "Physics", "Economics", "Finance", "Accounting", "Marketing",
    "Political Science", "History", "English", "Communications", "Journalism", "Elementary Education",
    "Secondary Education", "Criminal Justice", "Sociology", "Anthropology", "Studio Art", "Graphic Design",
    "Music", "Theatre", "Film Studies", "Architecture", "Environmental Science", "Kinesiology",
    "Exercise Science", "Pre-Medicine", "Pre-Law", "Health Sciences", "Public Health", "Neuroscience",
    "Data Science", "Information Technology", "Cybersecurity", "International Relations", "Philosophy",
    "Spanish", "Undecided", "Agriculture", "Animal Science", "Sports Management", "Hospitality Management",
    "Aviation", "Social Work", "Pharmacy", "Physical Therapy", "Dental Hygiene",
)

_ACTIVITIES: tuple[str, ...] = (
    "Varsity Athletics", "Junior Varsity Athletics", "Concert Band", "Marching Band", "Jazz Band",
    "Orchestra", "Choir", "Drama", "Student Government", "National Honor Society", "Speech and Debate",
    "Model UN", "Robotics", "Math Team", "Science Olympiad", "Yearbook", "School Newspaper",
    "Community Service", "Part-time Job", "Key Club", "DECA", "FBLA", "Future Farmers of America", "4-H",
    "JROTC", "Chess Club", "Art Club", "Photography", "Dance", "Cheerleading", "Quiz Bowl",
    "Environmental Club", "Coding Club", "Mock Trial", "Religious Youth Group", "Scouting", "Peer Tutoring",
    "World Language Club", "Film Club", "Intramural Sports", "Esports", "Habitat for Humanity",
    "Peer Mentoring", "Debate",
)

_COLLEGE_TYPES: tuple[str, ...] = (
    "Public", "Private", "Liberal Arts", "Research University", "Religiously Affiliated", "Community College",
    "Technical Institute", "HBCU", "Women's College", "Art and Design", "Military Academy", "Online",
)

# (name pattern, HIGHSCHOOLTYPE); "{c}" is the city, "{p}" a person a school might be named after
_SCHOOL_PATTERNS: tuple[tuple[str, str], ...] = (
    ("{c} High School", "Public"),
    ("{c} Central High School", "Public"),
    ("North {c} High School", "Public"),
    ("{p} High School", "Public"),
    ("{p} Senior High School", "Public"),
    ("{c} Early College High School", "Charter"),
    ("{c} Preparatory Academy", "Private"),
    ("St. {s} Catholic High School", "Religious"),
    ("{c} Christian Academy", "Religious"),
    ("{c} Charter School", "Charter"),
)
_SCHOOL_PEOPLE: tuple[str, ...] = (
    "Lincoln", "Washington", "Jefferson", "Kennedy", "Roosevelt", "Madison", "Franklin", "Hamilton",
    "Douglass", "Carver", "Eisenhower", "Truman", "Jackson", "Monroe", "Wilson",
)
_SAINTS: tuple[str, ...] = (
    "Mary's", "Joseph's", "Francis", "Ignatius", "Thomas Aquinas", "Patrick's", "John's",
)
# fmt: on
_SCHOOLS_PER_LOCATION = 6

# ACT national test months (Feb, Apr, Jun, Jul, Sep, Oct, Dec)
_ACT_TEST_MONTHS: tuple[int, ...] = (2, 4, 6, 7, 9, 10, 12)

_Student = tuple[str, str, str]  # display name, e-mail token, gender
_School = tuple[_Location, str, str, str]  # location, name, type, CEEB
_Birth = tuple[str, str, str, tuple[str, ...]]  # MM/DD/YYYY, grad year, 2-digit birth year, test dates


def export_header(product_key: str) -> list[str]:
    """Return the column names of the synthetic export for `product_key`."""
    _check_product(product_key)
    return list(_SCORE_REPORT_HEADER if product_key == _SCORE_REPORTER else _INQUIRY_HEADER)


def export_rows(product_key: str, *, count: int, seed: int, today: datetime.date) -> Iterator[list[str]]:
    """Return a lazy iterator of `count` deterministic rows of str values matching `export_header`."""
    _check_product(product_key)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    # Mixing the product into the seed makes each product's file a different list of students.
    rng = random.Random(f"{product_key}:{seed}")
    if product_key == _SCORE_REPORTER:
        return _score_report_rows(rng, count, today)
    return _inquiry_rows(rng, count, today, product_key.upper())


def write_export_csv(
    path: pathlib.Path, product_key: str, *, count: int, seed: int, today: datetime.date
) -> int:
    """Stream header and rows to `path` as UTF-8 CSV with CRLF line endings; return the data row count."""
    header = export_header(product_key)
    rows = export_rows(product_key, count=count, seed=seed, today=today)
    written = 0

    def counted() -> Iterator[list[str]]:
        nonlocal written
        for row in rows:
            written += 1
            yield row

    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(counted())
    return written


def _check_product(product_key: str) -> None:
    if product_key not in PRODUCT_KEYS:
        raise ValueError(f"unknown product key {product_key!r}; valid keys: {', '.join(PRODUCT_KEYS)}")


def _ascii_token(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum()).lower()


@functools.cache
def _first_names() -> tuple[_Student, ...]:
    tagged = [(name, "F") for name in _FEMALE_NAMES] + [(name, "M") for name in _MALE_NAMES]
    return tuple((name, _ascii_token(name), gender) for name, gender in tagged)


@functools.cache
def _last_names() -> tuple[tuple[str, str], ...]:
    return tuple((name, _ascii_token(name)) for name in _LAST_NAMES)


@functools.cache
def _schools() -> tuple[tuple[_School, ...], tuple[int, ...]]:
    """High schools per location with stable CEEB codes, plus cumulative sampling weights."""
    # Derived with crc32 instead of the row RNG so a school keeps its name and code across seeds and products.
    schools: list[_School] = []
    weights: list[int] = []
    for loc in _LOCATIONS:
        city, state = loc[0], loc[1]
        key = zlib.crc32(f"{city}|{state}".encode())
        for k in range(_SCHOOLS_PER_LOCATION):
            pattern, kind = _SCHOOL_PATTERNS[(key + k * 7) % len(_SCHOOL_PATTERNS)]
            name = pattern.format(
                c=city,
                p=_SCHOOL_PEOPLE[(key >> 8) % len(_SCHOOL_PEOPLE)],
                s=_SAINTS[(key >> 16) % len(_SAINTS)],
            )
            code = zlib.crc32(f"{name}|{city}|{state}".encode()) % 9999 + 1
            schools.append((loc, name, kind, f"{_CEEB_STATE_PREFIX[state]}{code:04d}"))
            weights.append(10 * loc[4] if kind == "Public" else 4 * loc[4])
        # Home-schooled students report the shared home-school code instead of a school's CEEB.
        schools.append((loc, "Home School", "Home School", _HOME_SCHOOL_CEEB))
        weights.append(loc[4])
    cumulative: list[int] = []
    total = 0
    for w in weights:
        total += w
        cumulative.append(total)
    return tuple(schools), tuple(cumulative)


def _test_dates(grad_year: int, today: datetime.date) -> tuple[str, ...]:
    """ACT test dates (MM/YYYY) a member of the class of `grad_year` could have taken by `today`."""
    candidates = [
        (y, m)
        for y in range(grad_year - 3, grad_year + 1)
        for m in _ACT_TEST_MONTHS
        if (grad_year - 3, 9) <= (y, m) <= (grad_year, 7) and (y, m) <= (today.year, today.month)
    ]
    if not candidates:
        # Younger students who cannot have sat in the usual window fall back to the latest past sitting.
        y, m = today.year, today.month
        while m not in _ACT_TEST_MONTHS:
            y, m = (y, m - 1) if m > 1 else (y - 1, 12)
        candidates = [(y, m)]
    # Recent sittings dominate: juniors and seniors test far more than younger students.
    weighted = [(y, m) for i, (y, m) in enumerate(candidates) for _ in range(1 + i)]
    return tuple(f"{m:02d}/{y:04d}" for y, m in weighted)


def _births(today: datetime.date) -> tuple[_Birth, ...]:
    """Every birth date giving an age of 16, 17 or 18 on `today`, with its graduation year and test dates."""
    latest = shift_years(today, -16)
    earliest = shift_years(today, -19) + datetime.timedelta(days=1)
    tests_by_year: dict[int, tuple[str, ...]] = {}
    births: list[_Birth] = []
    day = earliest
    one_day = datetime.timedelta(days=1)
    while day <= latest:
        # US school-entry cutoff of September 1: later birthdays graduate a year later.
        grad = day.year + (19 if (day.month, day.day) >= (9, 1) else 18)
        if grad not in tests_by_year:
            tests_by_year[grad] = _test_dates(grad, today)
        births.append(
            (
                f"{day.month:02d}/{day.day:02d}/{day.year:04d}",
                str(grad),
                f"{day.year % 100:02d}",
                tests_by_year[grad],
            )
        )
        day += one_day
    return tuple(births)


def _pool(
    rng: random.Random, size: int, make: Sequence[str] | None = None, *, blank: float = 0.0, digits: int = 0
) -> list[str]:
    """Pre-drawn value pool: zero-padded `digits`-digit numbers or items of `make`, blank with probability."""
    out: list[str] = []
    for _ in range(size):
        if rng.random() < blank:
            out.append("")
        elif make is not None:
            out.append(rng.choice(make))
        else:
            out.append(f"{rng.randrange(10**digits):0{digits}d}")
    return out


def _combos(
    rng: random.Random, size: int, items: Sequence[str], width: int, weights: Sequence[int]
) -> list[tuple[str, ...]]:
    """Pre-drawn tuples of distinct `items`, padded with blanks to `width`; `weights[k]` weights k filled."""
    counts = rng.choices(range(len(weights)), weights=weights, k=size)
    return [tuple(rng.sample(items, k)) + ("",) * (width - k) for k in counts]


def _half_up(numerator: int, denominator: int) -> int:
    # ACT rounds averages half up (Python's round() would round half to even).
    return (2 * numerator + denominator) // (2 * denominator)


def _clamp_score(value: float) -> int:
    return min(36, max(1, math.floor(value + 0.5)))


def _profiles(rng: random.Random, size: int) -> list[tuple[str, ...]]:
    """Pre-drawn (GPA, composite, math, science, English, reading, writing, STEM, ELA) string tuples."""
    gauss = rng.gauss
    out: list[tuple[str, ...]] = []
    for _ in range(size):
        ability = gauss(0.0, 1.0)
        eng, mth, rdg, sci, wri = (
            _clamp_score(20.5 + 5.6 * (0.85 * ability + 0.5 * gauss(0.0, 1.0))) for _ in range(5)
        )
        gpa = min(4.0, max(1.6, 3.35 + 0.42 * (0.6 * ability + 0.8 * gauss(0.0, 1.0))))
        composite = _half_up(eng + mth + rdg + sci, 4)
        stem = _half_up(mth + sci, 2)
        ela = _half_up(eng + rdg + wri, 3)
        out.append(tuple(str(v) for v in (f"{gpa:.2f}", composite, mth, sci, eng, rdg, wri, stem, ela)))
    return out


_ZIP_TAILS = [f"{i:02d}" for i in range(1, 100)]
_EXCHANGES = [str(n) for n in range(201, 1000) if n % 100 != 11]


def _address_pools(rng: random.Random) -> tuple[list[str], list[str]]:
    # Log-uniform house numbers: short numbers are common, five-digit rural numbers rare.
    numbers = [str(int(10 ** rng.uniform(0.0, 4.3))) for _ in range(4096)]
    seconds: list[str] = []
    for _ in range(2048):
        r = rng.random()
        if r < 0.82:
            seconds.append("")
        elif r < 0.92:
            seconds.append(f"Apt {rng.randint(1, 30)}{rng.choice('ABCDEF')}")
        elif r < 0.97:
            seconds.append(f"Unit {rng.randint(1, 400)}")
        else:
            seconds.append(f"Apt {rng.randint(1, 12)}, Bldg {rng.choice('ABCD')}")
    return numbers, seconds


# An affine map modulo 10**10 with a multiplier coprime to 10 gives unique, scattered, zero-padded PINs.
_PIN_MULTIPLIER = 3_486_784_401


@dataclass(frozen=True)
class _InquiryPools:
    """What inquiry rows are drawn from: the fixed lists and the pools pre-drawn from the file's seed."""

    schools: tuple[_School, ...]
    school_cw: tuple[int, ...]
    firsts: tuple[_Student, ...]
    lasts: tuple[tuple[str, str], ...]
    births: tuple[_Birth, ...]
    numbers: list[str]
    seconds: list[str]
    zip4s: list[str]
    lines: list[str]
    middles: list[str]
    email_nums: list[str]
    gpas: list[str]
    ctypes: list[tuple[str, ...]]
    majors: list[tuple[str, ...]]
    activities: list[tuple[str, ...]]
    pin_offset: int


def _inquiry_pools(rng: random.Random, today: datetime.date) -> _InquiryPools:
    schools, school_cw = _schools()
    numbers, seconds = _address_pools(rng)
    # Keyword arguments are evaluated in the order written: that order is the seed's order of draws.
    return _InquiryPools(
        schools=schools,
        school_cw=school_cw,
        firsts=_first_names(),
        lasts=_last_names(),
        births=_births(today),
        numbers=numbers,
        seconds=seconds,
        zip4s=_pool(rng, 4096, blank=0.35, digits=4),
        lines=_pool(rng, 8192, digits=4),
        middles=_pool(rng, 1024, "ABCDEFGHIJKLMNOPRSTW", blank=0.25),
        email_nums=_pool(rng, 512, [str(n) for n in range(1, 100)] + ["01", "07", "22", "123", "2008", "99"]),
        gpas=[p[0] if rng.random() > 0.08 else "" for p in _profiles(rng, 4096)],
        ctypes=_combos(rng, 1024, _COLLEGE_TYPES, 4, (20, 25, 25, 18, 12)),
        majors=_combos(rng, 2048, _MAJORS, 2, (8, 42, 50)),
        activities=_combos(rng, 4096, _ACTIVITIES, 8, (8, 10, 14, 16, 16, 13, 10, 7, 6)),
        pin_offset=rng.randrange(10**10),
    )


@dataclass(frozen=True)
class _InquiryChunk:
    """One chunk of rows drawn column-wise; the exchanges and lines hold two numbers a row (cell, phone)."""

    school: list[_School]
    first: list[_Student]
    last: list[tuple[str, str]]
    middle: list[str]
    birth: list[_Birth]
    number: list[str]
    street: list[str]
    suffix: list[str]
    second: list[str]
    zip_tail: list[str]
    zip4: list[str]
    email_pattern: list[str]
    email_num: list[str]
    email_domain: list[str]
    exchange: list[str]
    line: list[str]
    gpa: list[str]
    ctype: list[tuple[str, ...]]
    major: list[tuple[str, ...]]
    activity: list[tuple[str, ...]]
    # One uniform draw per row decides every sparse blank (disjoint bands), sparing extra RNG calls.
    flag: list[float]


def _inquiry_chunk(rng: random.Random, pools: _InquiryPools) -> _InquiryChunk:
    n, choices = _CHUNK, rng.choices
    # Keyword arguments are evaluated in the order written: that order is the seed's order of draws.
    return _InquiryChunk(
        school=choices(pools.schools, cum_weights=pools.school_cw, k=n),
        first=choices(pools.firsts, k=n),
        last=choices(pools.lasts, k=n),
        middle=choices(pools.middles, k=n),
        birth=choices(pools.births, k=n),
        number=choices(pools.numbers, k=n),
        street=choices(_STREET_NAMES, k=n),
        suffix=choices(_STREET_SUFFIXES, k=n),
        second=choices(pools.seconds, k=n),
        zip_tail=choices(_ZIP_TAILS, k=n),
        zip4=choices(pools.zip4s, k=n),
        email_pattern=choices(_EMAIL_PATTERNS, k=n),
        email_num=choices(pools.email_nums, k=n),
        email_domain=choices(_EMAIL_DOMAINS, k=n),
        exchange=choices(_EXCHANGES, k=2 * n),
        line=choices(pools.lines, k=2 * n),
        gpa=choices(pools.gpas, k=n),
        ctype=choices(pools.ctypes, k=n),
        major=choices(pools.majors, k=n),
        activity=choices(pools.activities, k=n),
        flag=[rng.random() for _ in range(n)],
    )


def _inquiry_row(chunk: _InquiryChunk, i: int, datsource: str, sequence: str, pin: str) -> list[str]:
    """Row `i` of the chunk."""
    loc, hs_name, hs_type, ceeb = chunk.school[i]
    first, ftok, gender = chunk.first[i]
    last, ltok = chunk.last[i]
    birth, grad, yy, _tests = chunk.birth[i]
    flag = chunk.flag[i]
    email = (
        ""
        if flag < 0.03
        else chunk.email_pattern[i].format(f=ftok, l=ltok, i=ftok[0], n=chunk.email_num[i], yy=yy)
        + "@"
        + chunk.email_domain[i]
    )
    phone = "" if flag > 0.55 else loc[3] + chunk.exchange[_CHUNK + i] + chunk.line[_CHUNK + i]
    return [
        datsource,
        sequence,
        pin,
        first,
        chunk.middle[i],
        last,
        f"{chunk.number[i]} {chunk.street[i]} {chunk.suffix[i]}",
        chunk.second[i],
        loc[0],
        loc[1],
        loc[2] + chunk.zip_tail[i],
        chunk.zip4[i],
        email,
        phone,
        loc[3] + chunk.exchange[i] + chunk.line[i],
        hs_name,
        hs_type,
        ceeb,
        birth,
        "" if 0.03 <= flag < 0.05 else gender,
        grad,
        chunk.gpa[i],
        *chunk.ctype[i],
        *chunk.major[i],
        *chunk.activity[i],
    ]


def _inquiry_rows(
    rng: random.Random, count: int, today: datetime.date, datsource: str
) -> Iterator[list[str]]:
    pools = _inquiry_pools(rng, today)
    produced = 0
    while produced < count:
        chunk = _inquiry_chunk(rng, pools)
        for i in range(min(_CHUNK, count - produced)):
            seq = produced + i
            pin = f"{(seq * _PIN_MULTIPLIER + pools.pin_offset) % 10**10:010d}"
            yield _inquiry_row(chunk, i, datsource, f"{seq + 1:06d}", pin)
        produced += _CHUNK


def _score_report_rows(rng: random.Random, count: int, today: datetime.date) -> Iterator[list[str]]:
    schools, school_cw = _schools()
    firsts, lasts = _first_names(), _last_names()
    births = _births(today)
    numbers, _seconds = _address_pools(rng)
    middles = _pool(rng, 1024, "ABCDEFGHIJKLMNOPRSTW", blank=0.25)
    profiles = _profiles(rng, 8192)
    # Same unique-and-scattered trick as STUDENTPIN, for 8-digit ACT IDs.
    id_offset = rng.randrange(10**8)
    id_mult = 43_046_721
    rand, choices = rng.random, rng.choices

    produced = 0
    while produced < count:
        n = _CHUNK
        c_school = choices(schools, cum_weights=school_cw, k=n)
        c_first = choices(firsts, k=n)
        c_last = choices(lasts, k=n)
        c_mid = choices(middles, k=n)
        c_birth = choices(births, k=n)
        c_num = choices(numbers, k=n)
        c_street = choices(_STREET_NAMES, k=n)
        c_suffix = choices(_STREET_SUFFIXES, k=n)
        c_tail = choices(_ZIP_TAILS, k=n)
        c_major = choices(_MAJORS, k=n)
        c_profile = choices(profiles, k=n)
        c_test = [rand() for _ in range(n)]
        for i in range(min(n, count - produced)):
            seq = produced + i
            loc, _hs_name, _hs_type, ceeb = c_school[i]
            birth, grad, _yy, tests = c_birth[i]
            profile = c_profile[i]
            yield [
                f"{(seq * id_mult + id_offset) % 10**8:08d}",
                c_first[i][0],
                c_mid[i],
                c_last[i][0],
                f"{c_num[i]} {c_street[i]} {c_suffix[i]}",
                loc[0],
                loc[1],
                loc[2] + c_tail[i],
                birth,
                tests[int(c_test[i] * len(tests))],
                ceeb,
                grad,
                profile[0],
                c_major[i],
                *profile[1:],
            ]
        produced += n
