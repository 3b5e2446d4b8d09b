#!/usr/bin/env python3
"""Rebuild fuzz/seeds/ from the reference repositories (shared/fixtures).

Run from anywhere: python3 fuzz/make_seeds.py [FIXTURES]. The seeds are small (a few
hundred KB in all) and committed; libFuzzer writes what it finds elsewhere (bench/fuzz.sh).
"""
import base64
import glob
import hashlib
import os
import sqlite3
import struct
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def fixtures():
    if len(sys.argv) > 1:
        return sys.argv[1]
    if os.environ.get("PERCH_FIXTURES"):
        return os.environ["PERCH_FIXTURES"]
    d = HERE
    while d != "/":
        c = os.path.join(d, "shared", "fixtures")
        if os.path.isdir(c):
            return c
        d = os.path.dirname(d)
    sys.exit("shared/fixtures not found; pass its path")


FIX = fixtures()
REPOS = ["tiny.example.org", "alt.example.org"]


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def stratum(repo, rel):
    with open(os.path.join(FIX, repo, "stratum0", rel), "rb") as f:
        return f.read()


def objects(repo, suffix):
    return sorted(glob.glob(os.path.join(FIX, repo, "stratum0", "data", "*", "*" + suffix)))


def esc(b):
    """%XX-escape bytes for the text catalog (space, %, newline and non-printables)."""
    out = []
    for c in b:
        if c <= 0x20 or c >= 0x7F or c in (ord("%"),):
            out.append("%%%02X" % c)
        else:
            out.append(chr(c))
    return "".join(out) or "%00"[:0]


def md5pair(path):
    return struct.unpack("<qq", hashlib.md5(path).digest())


def catalog_text(db):
    """Dump a catalog as the text form of perch_fuzz::write_catalog."""
    con = sqlite3.connect(db)
    con.text_factory = bytes
    props = dict(con.execute("SELECT key, value FROM properties"))
    root = props.get(b"root_prefix", b"")
    rows = con.execute(
        "SELECT md5path_1, md5path_2, parent_1, parent_2, flags, mode, size, hardlinks, hash, symlink, name, xattr FROM catalog"
    ).fetchall()
    by_parent = {}
    for r in rows:
        by_parent.setdefault((r[2], r[3]), []).append(r)
    paths = {}
    todo = [root]
    while todo:
        p = todo.pop()
        paths[md5pair(p)] = p
        for r in by_parent.get(md5pair(p), []):
            child = p + b"/" + r[10]
            if md5pair(child) == (r[0], r[1]) and child != p:
                todo.append(child)
    lines = ["S " + props.get(b"schema", b"2.5").decode()]
    if root:
        lines.append("P root_prefix " + esc(root))
    for r in rows:
        p = paths.get((r[0], r[1]))
        if p is None:
            continue
        h = r[8].hex() if r[8] else "-"
        x = " . " + esc(r[10]) + " " + r[11].hex() if r[11] else ""
        lines.append(
            "E %s %d %d %d %d %s %s%s"
            % (esc(p) if p else "", r[4], r[5], r[6], r[7] or 0, h, esc(r[9] or b""), x)
        )
    for (a, b, off, size, h) in con.execute("SELECT md5path_1, md5path_2, offset, size, hash FROM chunks"):
        p = paths.get((a, b))
        if p is not None:
            lines.append("C %s %d %d %s" % (esc(p), off, size, h.hex()))
    for (p, h, size) in con.execute("SELECT path, sha1, size FROM nested_catalogs"):
        lines.append("N %s %s %d" % (esc(p), h.decode(), size or 0))
    con.close()
    return ("\n".join(lines) + "\n").encode()


def main():
    for repo in REPOS:
        man = stratum(repo, ".cvmfspublished")
        wl = stratum(repo, ".cvmfswhitelist")
        put("manifest", repo, man)
        put("whitelist", repo, wl)
        put("signature", repo + ".manifest", man)
        put("signature", repo + ".whitelist", wl)
        for x in objects(repo, "X")[:1]:
            pem = zlib.decompress(open(x, "rb").read())
            put("certificate", repo + ".pem", pem)
            body = b"".join(l for l in pem.splitlines() if not l.startswith(b"-----"))
            put("certificate", repo + ".der", base64.b64decode(body))
        for i, h in enumerate(objects(repo, "H")[:1]):
            put("history", "%s.%d" % (repo, i), zlib.decompress(open(h, "rb").read()))
        for i, c in enumerate(objects(repo, "C")):
            raw = zlib.decompress(open(c, "rb").read())
            with tempfile.NamedTemporaryFile(suffix=".db") as t:
                t.write(raw)
                t.flush()
                put("catalog", "%s.%d" % (repo, i), catalog_text(t.name))
        put("config", repo, repo.encode() + b"\0" + open(os.path.join(FIX, repo, "client.conf"), "rb").read()
            + b"\0CVMFS_HTTP_PROXY=http://127.0.0.1:3128|http://[::1]:3128;DIRECT\nCVMFS_QUOTA_LIMIT=\n")
    put("reflog", "tiny", stratum("tiny.example.org", ".cvmfsreflog"))

    # zlib: declared size (u32 LE), piece size, stream.
    for name in ["84/15eecb60c637cbe5324dc8f614be6fe516816b", "a0/cb9b6b19330445a5da9ff5b5bf9a42a0cf1270"]:
        z = stratum("tiny.example.org", "data/" + name)
        size = len(zlib.decompress(z))
        put("zlib", name.replace("/", ""), struct.pack("<I", size) + b"\x07" + z)
    put("zlib", "bomb", struct.pack("<I", 1000) + b"\x3f" + zlib.compress(b"\0" * 100000))

    # http: first byte = mode (1 proxy, 2 follow redirects, 4 object download).
    man = stratum("tiny.example.org", ".cvmfspublished")
    hello = stratum("tiny.example.org", "data/84/15eecb60c637cbe5324dc8f614be6fe516816b")
    ok = lambda body: b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    chunked = lambda body: (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
    put("http", "manifest", b"\x00" + ok(man))
    put("http", "manifest-chunked", b"\x00" + chunked(man))
    put("http", "manifest-close", b"\x00HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n" + man)
    put("http", "object", b"\x04" + ok(hello))
    put("http", "object-chunked", b"\x05" + chunked(hello))
    put("http", "short", b"\x04HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + hello)
    put("http", "redirect", b"\x03HTTP/1.1 302 Found\r\nLocation: http://other.invalid/x\r\nContent-Length: 0\r\n\r\n")
    put("http", "notfound", b"\x00HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    put("http", "squid", b"\x01HTTP/1.1 503 Service Unavailable\r\nX-Squid-Error: ERR_CONNECT_FAIL 111\r\nContent-Length: 0\r\n\r\n")

    # exec: scripts and the head of a real ELF.
    put("exec", "sh", b"#!/bin/sh -e\necho hi\n")
    put("exec", "env", b"#! /cvmfs/x/bin/env  python3 \n")
    put("exec", "nested", b"#!/cvmfs/x/script\n")
    put("exec", "host", b"#!/host/bin/sh\n")
    with open("/bin/true", "rb") as f:
        put("exec", "elf", f.read(1024))

    # resolve: a small hostile namespace and lookups (base path flags).
    put("resolve", "basic", b"\n".join([
        b"D /d/e", b"F /d/f", b"L /l d/f", b"L /up ../../..", b"L /loop loop",
        b"L /abs /cvmfs/h.example.org/d", b"L /out /etc", b"L /long " + b"x" * 300,
        b"Q / /cvmfs/h.example.org/l \x01", b"Q /cvmfs/h.example.org d/../l/ \x03",
        b"Q / /cvmfs/h.example.org/up/cvmfs \x01", b"Q /cvmfs/h.example.org loop \x01",
        b"Q /cvmfs/h.example.org abs/e \x21",
    ]) + b"\n")


if __name__ == "__main__":
    main()
