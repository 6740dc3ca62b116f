"""The Python side of tests/tests/python_matrix.rs: reads every key newcache wrote through
every Python reader a Django shop uses, in this one process, and says per cell whether the
reader returned the same value (as the natural Python type), raised, missed, or returned
something else.

Run by the test with Debian's /usr/bin/python3 as `matrix_reader.py SPEC`; SPEC is a Python
literal (ast.literal_eval):

    {'addr': '127.0.0.1:PORT', 'marker_dir': DIR, 'values': [EXPECTED, ...],
     'cases': [(CASE_ID, VALUE_INDEX, WIRE_KEY), ...]}

DIR holds `newcache.py` (class Marker), as a Django app with django-newcache installed has
it; it goes first on sys.path, for every reader.

Output, one tab-separated record a line (tabs and newlines inside fields become spaces):

    MISSING  DEBIAN_PACKAGE  WHY        (then exit 3: nothing is read)
    VERSIONS TEXT
    CONTROL  READER  OWN_NONE_IS_DEFAULT (1 when the reader reads a None it stored itself
                                          as its default: Django's MemcachedCache, and
                                          django-newcache storing without its herd tuple)
    OWNBOOL  READER  REPR                (the reader stores True itself and reads it back)
    ZLIB     WHAT  FLAGS  READER  CLASS  LABEL  DETAIL
        pylibmc stores WHAT (`bytes` or `list`, compressible) itself with min_compress_len,
        as flags FLAGS (8 is zlib); how READER reads it back.
    FLAGS    CASE_ID  FLAGS               (the item's flags, read raw)
    CELL     CASE_ID  READER  CLASS  LABEL  DETAIL
        CLASS same | raises | miss | wrong; LABEL: for raises the exception's type name, for
        wrong the returned value's type name, for same `own-none-default` when a stored None
        read as the default exactly as the reader's own None does.
"""

import ast
import logging
import os
import sys
import time
import warnings

sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")


def field(text):
    return " ".join(str(text).split("\t")).replace("\r", " ").replace("\n", " ")


def emit(*fields):
    print("\t".join(field(f) for f in fields))


spec = ast.literal_eval(open(sys.argv[1], encoding="utf-8").read())
sys.path.insert(0, spec["marker_dir"])

missing = []
for module, package in [
    ("pylibmc", "python3-pylibmc"),
    ("pymemcache", "python3-pymemcache"),
    ("memcache", "python3-memcache"),
    ("django", "python3-django"),
]:
    try:
        __import__(module)
    except ImportError as e:
        missing.append((package, "import %s: %s" % (module, e)))
if missing:
    for package, why in missing:
        emit("MISSING", package, why)
    sys.exit(3)

import django  # noqa: E402
import memcache  # noqa: E402
import pylibmc  # noqa: E402
import pymemcache  # noqa: E402
import pymemcache.serde  # noqa: E402
from django.conf import settings  # noqa: E402

import newcache  # noqa: E402  (the marker module from marker_dir)

ADDR = spec["addr"]
SENTINEL = object()

# Errors a client swallows (returning None instead of raising): pymemcache's serde logs
# "Pickle error" on the root logger; python-memcached reports through Client.debuglog.
SWALLOWED = []


class Swallowed(logging.Handler):
    def emit(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        what = "%s: %s" % (type(exc).__name__, exc) if exc else ""
        SWALLOWED.append("%s %s" % (record.getMessage(), what))


root = logging.getLogger()
root.handlers[:] = [Swallowed()]
root.setLevel(logging.INFO)
memcache.Client.debuglog = lambda self, msg: SWALLOWED.append(str(msg).strip())
warnings.simplefilter("ignore")  # MemcachedCache's deprecation warning


def same_key(key, key_prefix, version):
    return key


settings.configure(
    CACHES={
        alias: {
            "BACKEND": "django.core.cache.backends.memcached." + backend,
            "LOCATION": ADDR,
            "KEY_FUNCTION": same_key,
        }
        for alias, backend in [
            ("default", "PyLibMCCache"),
            ("pylibmc", "PyLibMCCache"),
            ("pymemcache", "PyMemcacheCache"),
            ("memcached", "MemcachedCache"),
        ]
    },
    INSTALLED_APPS=[],
)
django.setup()
from django.core.cache import caches  # noqa: E402

text = pylibmc.Client([ADDR])
binary = pylibmc.Client([ADDR], binary=True)
pm = pymemcache.Client(ADDR, serde=pymemcache.serde.pickle_serde)
py = memcache.Client([ADDR])


class FlagsSerde:
    """Returns an item's flags, undecoded."""

    def serialize(self, key, value):
        raise NotImplementedError

    def deserialize(self, key, value, flags):
        return flags


raw = pymemcache.Client(ADDR, serde=FlagsSerde())


def newcache_unpack_value(value):
    # django-newcache's read path, as its _unpack_value has it.
    try:
        marker, unpacked, herd_timeout = value
    except (ValueError, TypeError):
        return value
    if not isinstance(marker, newcache.Marker):
        return value
    return unpacked


def newcache_get(key):
    value = text.get(key)
    if value is None:
        return SENTINEL
    return newcache_unpack_value(value)


def newcache_set(key, value, timeout=300, herd=True):
    # django-newcache's set: its herd tuple unless herd=False or timeout=0, which store the
    # value bare (as newcache's own envelope does: the herd state rides in the flags).
    if herd and timeout != 0:
        text.set(key, (newcache.Marker(), value, int(time.time()) + timeout), timeout + 60)
    else:
        text.set(key, value, timeout)


# (id, get(key) returning SENTINEL where the reader can report a miss, set(key, value))
READERS = [
    ("pylibmc", lambda k: text.get(k, SENTINEL), text.set),
    ("pylibmc_binary", lambda k: binary.get(k, SENTINEL), binary.set),
    ("pymemcache", lambda k: pm.get(k, default=SENTINEL), pm.set),
    # python-memcached's get has no default: None is all it says for a miss.
    ("python_memcached", py.get, py.set),
    ("django_pylibmc", lambda k: caches["pylibmc"].get(k, SENTINEL), caches["pylibmc"].set),
    (
        "django_pymemcache",
        lambda k: caches["pymemcache"].get(k, SENTINEL),
        caches["pymemcache"].set,
    ),
    (
        "django_memcached",
        lambda k: caches["memcached"].get(k, SENTINEL),
        caches["memcached"].set,
    ),
    # Stores bare (herd=False): the form newcache's non-envelope writers' values have.
    ("django_newcache", newcache_get, lambda k, v: newcache_set(k, v, herd=False)),
]

emit(
    "VERSIONS",
    "Python %s, pylibmc %s, pymemcache %s, python-memcached %s, Django %s"
    % (
        sys.version.split()[0],
        pylibmc.__version__,
        pymemcache.__version__,
        memcache.__version__,
        django.get_version(),
    ),
)

# How each reader reads a None it stored itself.
own_none_is_default = {}
for rid, get, put in READERS:
    key = "newcache-pymatrix-own-none-" + rid
    put(key, None)
    own_none_is_default[rid] = get(key) is SENTINEL
    emit("CONTROL", rid, int(own_none_is_default[rid]))

# How each reader reads a True it stored itself (pylibmc stores flag 2, and reads it as 1).
for rid, get, put in READERS:
    key = "newcache-pymatrix-own-bool-" + rid
    put(key, True)
    emit("OWNBOOL", rid, repr(get(key)))


def same(a, b):
    """Equal and of the same type, all the way down (1 == True and 1 == 1.0 in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def short(value, n=100):
    r = repr(value)
    return r if len(r) <= n else r[:n] + "... (%d chars)" % len(r)


def classify(rid, get, key, expected):
    SWALLOWED.clear()
    try:
        value = get(key)
    except Exception as e:
        return "raises", type(e).__name__, "%s: %s" % (type(e).__name__, str(e)[:60])
    if value is SENTINEL or value is None:
        if SWALLOWED:
            return "miss", "swallowed", "returned %r after swallowing: %s" % (
                None if value is SENTINEL else value,
                SWALLOWED[0][:100],
            )
        if expected is None and value is None:
            return "same", "", ""
        if expected is None and own_none_is_default[rid]:
            return "same", "own-none-default", "the default, as for the reader's own None"
        return "miss", "", "the default" if value is SENTINEL else "None"
    if same(value, expected):
        return "same", "", ""
    return "wrong", type(value).__name__, "%s %s" % (type(value).__name__, short(value))


# pylibmc's own zlib-compressed values (min_compress_len), read by every reader.
for what, value in [
    ("bytes", bytes(i % 251 for i in range(204800))),
    ("list", ["item-%d" % i for i in range(2000)]),
]:
    key = "newcache-pymatrix-zlib-" + what
    text.set(key, value, 300, min_compress_len=1024)
    flags = raw.get(key)
    for rid, get, _ in READERS:
        cls, label, detail = classify(rid, get, key, value)
        emit("ZLIB", what, flags, rid, cls, label, detail)

values = spec["values"]
for case_id, value_index, key in spec["cases"]:
    emit("FLAGS", case_id, raw.get(key))
    expected = values[value_index]
    for rid, get, _ in READERS:
        cls, label, detail = classify(rid, get, key, expected)
        emit("CELL", case_id, rid, cls, label, detail)
sys.stdout.flush()
