"""Identifier formats, all derived from seeded randomness or from the person's global index.

Random ids (event ids, anonymous ids, ...) come from the chunk's ``random.Random``; ids that must be
unique across chunks without coordination (Salesforce Ids, user ids, phone numbers) are bijective
functions of the global person index, so two chunks can never collide.
"""

from __future__ import annotations

import base64
import random

_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SF_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_UUID_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_SF_FIRST = 21_474_836_471  # the org's first contact number: Ids look like 0035g00000NOl4Ln... not 000...1


def person_id(index: int) -> str:
    """``P0000001`` for global index 0."""
    return f"P{index + 1:07d}"


def hex_id(rng: random.Random, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID string from the seeded RNG (uuid.uuid4 would use the OS entropy)."""
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def sg_event_id(rng: random.Random) -> str:
    """SendGrid event id: 22 URL-safe base64 characters (128 random bits)."""
    return base64.urlsafe_b64encode(rng.getrandbits(128).to_bytes(16, "big"))[:22].decode()


def salesforce_id(counter: int) -> str:
    """An 18-character Contact Id: key prefix ``003``, pod ``5g``, 9 base-62 digits, and the real checksum.

    The 3-character suffix is Salesforce's case-safety checksum (one bit per upper-case letter in each
    5-character block), so the Ids validate like real ones.
    """
    digits = []
    n = _SF_FIRST + counter
    for _ in range(9):
        n, r = divmod(n, 62)
        digits.append(_B62[r])
    id15 = "0035g0" + "".join(reversed(digits))
    suffix = []
    for block in range(3):
        bits = 0
        for i, ch in enumerate(id15[block * 5 : block * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix.append(_SF_SUFFIX[bits])
    return id15 + "".join(suffix)


def scramble(index: int, modulus: int, mult: int, offset: int) -> int:
    """Bijection of ``[0, modulus)`` (``mult`` coprime to the power-of-ten ``modulus``): unique but
    random-looking numbers."""
    return (index * mult + offset) % modulus


def user_id(index: int, seed_offset: int) -> str:
    """App user id ``usr_`` + 8 stable digits per person (not the person number, so it leaks nothing)."""
    return f"usr_{scramble(index, 100_000_000, 48_271_937, seed_offset):08d}"


# random.Random.randrange/choice/randint cost ~0.4 us each through their argument checks; these are
# 3-4x faster and draw from the same seeded stream, which matters at 10M records.
def rr(rng: random.Random, lo: int, hi: int | None = None) -> int:
    """Uniform integer in [lo, hi), or in [0, lo) with one argument."""
    if hi is None:
        return int(rng.random() * lo)
    return lo + int(rng.random() * (hi - lo))


def pick(rng: random.Random, seq):
    """Uniform choice from a non-empty sequence."""
    return seq[int(rng.random() * len(seq))]
