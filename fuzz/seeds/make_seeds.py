#!/usr/bin/python3
"""Writes the seed inputs of fuzz/corpus/ that come from outside newcache.

- text_reply, meta_reply: replies captured from a real memcached (1.6.18 on Debian 12),
  which this script starts on a free loopback port, to get/gets/get_many, store, delete,
  incr, touch, stats and meta requests, alone and pipelined;
- value_codec, pickle_marker: pickles from this Python (protocols 0-5, and
  django-newcache's herd tuple), zlib data as pylibmc compresses it, Python clients' ints
  and bools;
- url: every newcache:// URL in README.md, docs/, crates/ and tests/ (placeholders filled).

Run from anywhere: /usr/bin/python3 fuzz/seeds/make_seeds.py. The seeds newcache's own
encoders make are written by `cargo run -p newcache-fuzz-targets --example seeds` in fuzz/.
Each seed's file name is its content's SHA-1, as libFuzzer names corpus files, so running
this again adds nothing twice. Input layouts: fuzz/targets/src/*.rs.
"""

import hashlib
import os
import pickle
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib

FUZZ = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(FUZZ)
CORPUS = os.path.join(FUZZ, "corpus")

STATUS, VALUES, STATS, META = 0, 1, 2, 3
DIRECT, CAPACITY, ROTATE = 0b100, 0b1000, 0b10000
# Indexes into the reply targets' CHUNK_LIMITS: 1 byte, 3, 13, 1024, all at once.
CHUNKS = [0, 2, 5, 8, 11]

written = {}


def seed(target, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(d, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        written[target] = written.get(target, 0) + 1


def reply_seed(target, kind, raw, variants=3, mode=0):
    """A reply with a few modes and chunkings (the reply targets' 3-byte header)."""
    for i in range(variants):
        flags = kind | mode | (DIRECT if i % 2 else 0) | (CAPACITY if i == 2 else 0)
        header = bytes([flags, 17 + 31 * i, CHUNKS[(i * 2 + len(raw)) % len(CHUNKS)]])
        seed(target, header + raw)


class Memcached:
    def __init__(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        args = ["memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-I", "2m"]
        if os.getuid() == 0:
            args += ["-u", "root"]
        self.proc = subprocess.Popen(args)
        for _ in range(100):
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise SystemExit("memcached did not start")

    def ask(self, request, until):
        """Sends `request` and returns the raw reply bytes, read until they end with one
        of `until` (bytes suffixes)."""
        self.sock.sendall(request)
        buf = b""
        deadline = time.time() + 5
        def done():
            if any(buf.endswith(u) for u in until):
                return True
            # An error line ends any reply.
            return buf.endswith(b"\r\n") and re.match(rb"(CLIENT_|SERVER_)?ERROR", buf)

        while not done():
            if time.time() > deadline:
                raise SystemExit(f"no reply to {request[:60]!r}: {buf[:200]!r}")
            self.sock.settimeout(5)
            try:
                buf += self.sock.recv(65536)
            except socket.timeout:
                raise SystemExit(f"no complete reply to {request[:60]!r}: {buf[:200]!r}")
        return buf

    def stop(self):
        self.sock.close()
        self.proc.terminate()
        self.proc.wait()


LINE_END = [b"\r\n"]
END = [b"END\r\n", b"ERROR\r\n"]


def capture():
    m = Memcached()
    replies = []  # (kind, raw)
    try:
        def status(req):
            r = m.ask(req, LINE_END)
            replies.append((STATUS, r))
            return r

        def values(req):
            r = m.ask(req, END)
            replies.append((VALUES, r))
            return r

        def meta(req, until=LINE_END):
            r = m.ask(req, until)
            replies.append((META, r))
            return r

        status(b"set hello 16 0 5\r\nhello\r\n")
        status(b"add hello 0 0 1\r\nx\r\n")
        status(b"set bin 4294967295 0 6\r\n\r\n\x00\xff\r\n\r\n")
        status(b"set n 4 0 2\r\n41\r\n")
        status(b"incr n 1\r\n")
        status(b"decr n 100\r\n")
        status(b"incr hello 1\r\n")
        status(b"incr missing 1\r\n")
        status(b"touch hello 300\r\n")
        status(b"touch missing 300\r\n")
        status(b"delete n\r\n")
        status(b"delete n\r\n")
        status(b"cas hello 16 0 5 999999\r\nhallo\r\n")
        status(b"cas missing 0 0 1 1\r\nx\r\n")
        status(b"version\r\n")
        status(b"bogus\r\n")
        status(b"set toolong 0 0 3000000\r\n" + b"x" * 3000000 + b"\r\n")
        status(b"set " + b"k" * 251 + b" 0 0 1\r\nx\r\n")
        status(b"set n 0 0 20\r\n18446744073709551615\r\n")
        status(b"incr n 0\r\n")
        status(b"set big 7 0 10000\r\n" + bytes(i % 251 for i in range(10000)) + b"\r\n")
        status(b"set " + b"K" * 250 + b" 1 0 3\r\nabc\r\n")
        values(b"get hello\r\n")
        values(b"gets hello\r\n")
        values(b"get missing\r\n")
        values(b"get hello bin missing " + b"K" * 250 + b"\r\n")
        values(b"gets hello bin big\r\n")
        values(b"get big\r\n")
        values(b"get " + b"k" * 251 + b"\r\n")
        r = m.ask(b"stats\r\n", END)
        replies.append((STATS, r))
        r = m.ask(b"stats settings\r\n", END)
        replies.append((STATS, r))
        r = m.ask(b"stats items\r\n", END)
        replies.append((STATS, r))
        replies.append((STATS, m.ask(b"stats nonsense\r\n", END)))
        # Meta commands, as newcache's text transport sends them and more.
        meta(b"mg hello v f c t R60\r\n", [b"\r\nhello\r\n"])
        meta(b"mg missing v f c t R60\r\n")
        meta(b"mg hello\r\n")
        meta(b"mg hello k v O1234 q\r\nmn\r\n", [b"MN\r\n"])
        meta(b"ms metakey 5 T60 F272\r\nmeta!\r\n")
        meta(b"ms metakey 5 I\r\nnope!\r\n")
        meta(b"ms metakey S5 T0 F1 MA\r\nxxxxx\r\n")
        meta(b"mg metakey v f c t s\r\n", [b"\r\nmeta!\r\n", b"\r\n"])
        meta(b"md metakey I T120\r\n")
        meta(b"mg metakey v f c t R60\r\n", [b"!\r\n"])
        meta(b"mg metakey v f c t R60\r\n", [b"!\r\n"])
        meta(b"md metakey\r\n")
        meta(b"md metakey\r\n")
        meta(b"ms metakey 2 C1\r\nxx\r\n")
        meta(b"ms metakey 2 ME\r\nxx\r\n")
        meta(b"ma counter N0 J13\r\n")
        meta(b"ma counter v\r\n", [b"\r\n14\r\n", b"\r\n"])
        meta(b"mg big v f c\r\n", [bytes(i % 251 for i in range(9990, 10000)) + b"\r\n"])
        # Tagged as the text transport tags every meta command (key echoed, opaque token).
        meta(b"mg hello v f c k O7\r\n", [b"\r\nhello\r\n"])
        meta(b"mg hello v f c t R60 k O4294967295\r\n", [b"\r\nhello\r\n"])
        meta(b"mg missing v f c k O8\r\n")
        meta(b"mg hello T300 k O9\r\n")
        meta(b"ms tagged 3 T60 F16 k O10\r\nabc\r\n")
        meta(b"ms tagged 3 MA k O11\r\nxyz\r\n")
        meta(b"ms tagged 3 ME k O12\r\nxyz\r\n")
        meta(b"md tagged I T30 k O13\r\n")
        meta(b"mg tagged v f c t R60 k O14\r\n", [b"xyz\r\n"])
        meta(b"md tagged k O15\r\n")
        meta(b"md tagged k O16\r\n")
        meta(b"ma tagged N0 J5 v k O17\r\n", [b"\r\n5\r\n", b"\r\n"])
        meta(b"mn\r\n")
        meta(b"mg\r\n")
        meta(b"mg " + b"k" * 251 + b" v\r\n")
        meta(b"me hello\r\n", [b"EN\r\n", b"\r\n"])
        # Pipelined: a store, a get, stats, a meta get, in one stream (rotate mode).
        stream = (
            m.ask(b"set p 1 0 3\r\nabc\r\n", LINE_END)
            + m.ask(b"get p hello\r\n", END)
            + m.ask(b"stats slabs\r\n", END)
            + m.ask(b"mg p v f c t\r\n", [b"abc\r\n"])
        )
        replies.append((STATUS | ROTATE, stream))
        gets = m.ask(b"get hello\r\nget p\r\nget missing\r\n", [b"abc\r\nEND\r\nEND\r\n"])
        replies.append((VALUES, gets))
        metas = m.ask(b"mg p v\r\nmg hello v c\r\nmg missing v\r\nmn\r\n", [b"MN\r\n"])
        replies.append((META, metas))
    finally:
        m.stop()
    for kind, raw in replies:
        target = "meta_reply" if kind & 3 == META else "text_reply"
        reply_seed(target, kind & 3, raw, mode=kind & ROTATE)
        if target == "meta_reply":
            reply_seed("text_reply", META, raw, variants=1)
    # Hand-made edges the captures lack: old servers' padded decr, a CAS at u64::MAX, a
    # value whose bytes look like lines, a line just under MAX_LINE.
    for kind, raw in [
        (STATUS, b"5  \r\n"),
        (VALUES, b"VALUE a 0 5 18446744073709551615\r\nEND\r\n\r\nEND\r\n"),
        (VALUES, b"VALUE a 0 0\r\n\r\nVALUE b 0 0 0\r\n\r\nEND\r\n"),
        (STATS, b"STAT " + b"x" * 8000 + b" y\r\nEND\r\n"),
        (META, b"VA 2 f0 c0 W X Z k O t-1 s2\r\nab\r\n"),
        (META, b"SERVER_ERROR out of memory storing object\r\n"),
        (META, b"CLIENT_ERROR bad command line format\r\n"),
    ]:
        target = "meta_reply" if kind == META else "text_reply"
        reply_seed(target, kind, raw)


def python_values():
    """value_codec seeds: type selector, flags (LE u32), offset byte, bytes."""

    def value(types, flags, data, offset=0):
        for t in types:
            seed("value_codec", bytes([t]) + struct.pack("<I", flags) + bytes([offset]) + data)

    STRING, BYTES, I64, U64, BOOL, F64, RECORD, MAP, OPTVEC, TUPLE = range(10)
    KIND, CHAR, I128, U8, OPTF64, VECVEC, JSON, ANY = range(10, 18)
    objs = [
        ({"a": [1, 2]}, [MAP, JSON]),
        ({"a": [1, 2], "b": [-3, 2**40]}, [MAP]),
        (["chess", "go"], [OPTVEC, JSON]),
        (None, [OPTVEC, OPTF64, JSON]),
        (True, [BOOL, JSON]),
        (False, [BOOL]),
        (42, [I64, U64, I128, U8, F64]),
        (-7, [I64, I128]),
        (2**63 + 5, [U64, I128, JSON]),
        (2**80, [I128, JSON]),
        (1.5, [F64, JSON]),
        (float("nan"), [F64]),
        (float("-inf"), [F64]),
        ("héllo", [STRING, JSON]),
        ("é", [CHAR]),
        (b"\x00\xffbytes", [BYTES, JSON]),
        (("x", 5, True), [TUPLE, JSON]),
        ([1.5, None, -0.0], [OPTF64]),
        ([b"ab", b""], [VECVEC]),
        ({"name": "n", "ids": [1, 2], "active": None, "tags": {"t": 1}, "pairs": [["p", 2]],
          "kind": "Unit"}, [RECORD, JSON]),
        ({"name": "n", "ids": [], "active": True, "tags": {}, "pairs": [],
          "kind": {"Struct": {"id": 3, "label": None}}}, [RECORD]),
        ({"Newtype": "x"}, [KIND]),
        ({"Tuple": [1, False]}, [KIND]),
        ("Unit", [KIND]),
        ({"a": {"b": {"c": [[], {}]}}}, [JSON, ANY]),
        (set([1, 2]), [JSON]),
        (frozenset(["a"]), [JSON]),
        (bytearray(b"ba"), [BYTES]),
        ([[[[[[[[]]]]]]]], [JSON, ANY]),
        (["ab", "ab", "ab"], [OPTVEC]),
        (255, [U8]),
    ]
    for obj, types in objs:
        for proto in range(0, 6):
            try:
                data = pickle.dumps(obj, proto)
            except Exception:
                continue
            value(types if proto in (2, 5) else types[:1], 1, data)
        value(types[:1], 1 | 8, zlib.compress(pickle.dumps(obj, 5)))
    # A shared reference (memo) and a class instance (refused, with its name).
    shared = [1, 2]
    value([JSON, MAP], 1, pickle.dumps({"a": shared, "b": shared}, 5))
    value([JSON, ANY], 1, pickle.dumps(Exception("x"), 5))
    import datetime
    import decimal
    value([JSON, ANY], 1, pickle.dumps(datetime.datetime(2024, 1, 2, 3, 4, 5), 5))
    value([JSON, ANY], 1, pickle.dumps(decimal.Decimal("1.5"), 4))
    # Python clients' plain values.
    value([STRING, CHAR, JSON, OPTVEC], 16, "héllo".encode())
    value([CHAR], 16, "é".encode())
    value([I64, U64, I128, U8, JSON], 4, b"42")
    value([I64, I128, JSON], 4, b"-9223372036854775808")
    value([U64, I128], 4, b"18446744073709551615")
    value([I128], 4, b"170141183460469231731687303715884105727")
    value([I64, BOOL, JSON], 2, b"1")
    value([I64, BOOL, JSON], 2, b"0")
    value([I64, JSON], 2, b"5")
    value([I64, U64], 4, b"12   ")
    value([BYTES, VECVEC, JSON, OPTVEC], 0, b"\x00\xff raw")
    value([BYTES, STRING, OPTVEC], 0, b"")
    value([F64], 16, b"1.5")
    # zlib as pylibmc writes it (min_compress_len), and a bomb for the inflate limit.
    value([STRING, JSON], 16 | 8, zlib.compress(("héllo " * 200).encode()))
    value([BYTES], 0 | 8, zlib.compress(b"\x00" * 1000))
    value([I64], 4 | 8, zlib.compress(b"123"))
    value([BYTES, ANY], 8, zlib.compress(b"\x00" * (1 << 20), 9))
    # The herd bit and state with a value (a cache strips them before decoding).
    value([STRING], 16 | 256 | (1 << 11) | (0xBEEF << 16), b"enveloped")
    # A format-1 herd header in front (offset 13: byte 128 + 13).
    header = b"\x01" + struct.pack(">QI", 1_700_000_000_000, 250)
    value([STRING], 16, header + b"hello", offset=128 + 13)
    value([STRING], 16, header + b"hello", offset=255)


def python_markers():
    """pickle_marker seeds: expiry (LE u64), flags (LE u32), bytes."""

    def marker(expiry, flags, data):
        seed("pickle_marker", struct.pack("<QI", expiry, flags) + data)

    # django-newcache's tuples, as its Python 3 code stores them (from codec/pickle.rs).
    for h in [
        "8005952a000000000000008c086e65776361636865948c064d61726b65729493942981948c0668c3a96c6c6f944ae5cf0e6b87942e",
        "80059523000000000000008c086e65776361636865948c064d61726b65729493942981944b2a4ae5cf0e6b87942e",
        "80059510000000000000007d948c0161945d94284b014b0265732e",
    ]:
        for flags in range(4):
            marker(1_800_000_000, flags, bytes.fromhex(h))
            marker(2**31, flags, bytes.fromhex(h))

    # The same shape made here: a stand-in for newcache.Marker pickles as
    # "newcache.Marker" when its module is named so.
    import types

    mod = types.ModuleType("newcache")

    class Marker:
        pass

    Marker.__module__ = "newcache"
    Marker.__qualname__ = "Marker"
    mod.Marker = Marker
    sys.modules["newcache"] = mod
    for value in ["héllo", 42, 2**40, {"a": [1, 2]}, None, True, [1.5], b"raw"]:
        for proto in (0, 1, 2, 3, 4, 5):
            for expiry in (1_796_132_837, 2**33):
                data = pickle.dumps((Marker(), value, expiry), proto)
                marker(1_900_000_000, 3, data)
    # Plain values to wrap: text, bytes, ints, pickles.
    marker(1_800_000_000, 0, "héllo".encode())
    marker(1_800_000_000, 1, b"\x00\xff")
    marker(1_800_000_000, 2, b"-5")
    marker(2**40, 2, b"18446744073709551615")
    marker(1_800_000_000, 3, pickle.dumps({"a": [1, 2]}, 5))
    marker(1_800_000_000, 3, pickle.dumps([1, "x", None, 1.5], 3))


def urls():
    found = set()
    for base in ["README.md", "docs", "crates", "tests"]:
        path = os.path.join(ROOT, base)
        files = [path] if os.path.isfile(path) else [
            os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
            if f.endswith((".md", ".rs"))
        ]
        for f in files:
            with open(f, encoding="utf-8", errors="replace") as fh:
                for u in re.findall(r"newcache://[^\s`\"')<>]*", fh.read()):
                    found.add(u)
    fills = {
        "{SERVER}": "127.0.0.1:11211", "{addr}": "127.0.0.1:11211", "{}": "127.0.0.1:11211",
        "ADDR": "127.0.0.1:11211", "{params}": "herd=early", "{transport}": "transport=text",
        "{TRANSPORT}": "transport=memory", "{extra}": "&codec=pickle", "{q}": "timeout=forever",
        "{name}": "crc", "...": "flavor=x",
    }
    for u in sorted(found):
        for k, v in fills.items():
            u = u.replace(k, v)
        u = re.sub(r"\{[^}]*\}", "x", u)
        seed("url", u.encode())
    for u in [
        "newcache://a:11211:1;b:11211:4294967295/?behaviors.ketama_weighted=true",
        "newcache://[::1]:11211;[fe80::1%25eth0]:1/?behaviors.distribution=consistent",
        "newcache://a/?behaviors.hash=fnv1a_32&behaviors.failure_limit=3&behaviors.dead_timeout=1",
        "newcache://a/?behaviors._poll_timeout=1&behaviors.connect_timeout=1&behaviors._sort_hosts=1",
        "newcache://a/?timeout=18446744073709551615&herd_timeout=4294967295&lease_wait=18446744073709551615",
        "newcache://a/?early_beta=1e308&herd=early&flavor=%E2%9C%93&version=%00",
        "newcache:///?transport=memory&key_function=django&key_prefix=%20",
    ]:
        seed("url", u.encode())


def main():
    if not shutil.which("memcached"):
        raise SystemExit("memcached is not installed")
    capture()
    python_values()
    python_markers()
    urls()
    for target, n in sorted(written.items()):
        print(f"{target}: {n} new seeds")


if __name__ == "__main__":
    main()
