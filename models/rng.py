"""Counter-based random numbers: Philox4x32-10 keyed from a ``SeedSequence``.

Every random number of a simulation is a pure function of
``(key, path index, stream, draw index)``, where a named source (an event) has a
stream and draw derived from its name (:func:`named_counter`): the Philox4x32-10 block cipher of
Random123 (Salmon et al., SC11) applied to the counter
``(path_lo, path_hi, draw, stream)`` under a 64-bit key.  Nothing depends on
the order in which paths are visited, so any thread count or chunk size gives
the same numbers, bit for bit.

Uniforms take 53 bits from two 32-bit words and are centred in their cell,
``u = (k + 0.5) / 2**53``, so they never reach 0 or 1; normals come from the
inverse CDF :func:`ndtri` (Wichura's AS241, PPND16, ~1e-16 relative).
"""

from __future__ import annotations

import hashlib

import numpy as np

from models._jit import jit

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)

# Streams: independent families of draws on the same path.  The step
# streams are indexed by the time step, the others by a draw number, so adding
# a driver never shifts the numbers another driver sees.
STREAM_DRIVERS = 0  # per-path AGI drivers: declaration, verification lag, whether it is ever verified
STREAM_SHOCKS = 1  # per-step revenue and growth shocks
STREAM_JUMPS = 2  # per step: the jump count's uniform, and (its pair) the growth process's third normal
STREAM_NAMED = 0x80000000  # top bit of the stream word: a named source (an event, a deadline's completion)


def named_counter(name: str) -> tuple[int, int]:
    """The (stream, draw) counter words of a random source identified by its name.

    63 bits of the name's SHA-256: 31 in the stream word (under :data:`STREAM_NAMED`, so never one of the
    numbered streams) and 32 in the draw word.  A source's numbers depend on its name only: adding,
    removing or reordering other sources leaves them as they are.
    """
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return STREAM_NAMED | (int.from_bytes(digest[:4], "little") >> 1), int.from_bytes(digest[4:8], "little")


def key_from_seed(seed: int | np.random.SeedSequence) -> tuple[np.ndarray, np.random.SeedSequence]:
    """Derive the Philox key from a seed.

    Parameters
    ----------
    seed
        A non-negative integer or a ``numpy.random.SeedSequence``.

    Returns
    -------
    key, seed_sequence
        ``key`` is a ``uint32`` array of length 2; the ``SeedSequence`` carries the
        entropy to record in reports.
    """
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return ss.generate_state(2, dtype=np.uint32), ss


@jit
def _mulhilo(a, b):
    product = np.uint64(a) * b
    return np.uint32(product >> _SHIFT32), np.uint32(product & _MASK32)


@jit
def philox4x32(c0, c1, c2, c3, k0, k1, rounds=10):
    """Philox4x32 with ``rounds`` rounds (10 is the standard strength).

    All arguments are ``uint32``; returns the four output words.
    """
    c0 = np.uint32(c0)
    c1 = np.uint32(c1)
    c2 = np.uint32(c2)
    c3 = np.uint32(c3)
    k0 = np.uint32(k0)
    k1 = np.uint32(k1)
    for r in range(rounds):
        if r > 0:
            k0 = np.uint32(k0 + PHILOX_W0)
            k1 = np.uint32(k1 + PHILOX_W1)
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@jit
def _to_unit(hi, lo):
    """53 random bits from two words → a uniform strictly inside (0, 1)."""
    k = (np.uint64(hi) >> np.uint64(6)) * np.uint64(134217728) + (np.uint64(lo) >> np.uint64(5))
    return (np.float64(k) + 0.5) * 1.1102230246251565e-16  # 2**-53


@jit
def uniform_pair(key, path, stream, draw):
    """Two independent uniforms in (0, 1) for ``(path, stream, draw)``."""
    p = np.uint64(path)
    w0, w1, w2, w3 = philox4x32(
        np.uint32(p & _MASK32), np.uint32(p >> _SHIFT32), np.uint32(draw), np.uint32(stream), key[0], key[1]
    )
    return _to_unit(w0, w1), _to_unit(w2, w3)


@jit
def uniform(key, path, stream, draw):
    """One uniform in (0, 1) for ``(path, stream, draw)`` (the first of the pair)."""
    return uniform_pair(key, path, stream, draw)[0]


@jit
def ndtri(p):
    """Inverse of the standard normal CDF (Wichura 1988, AS241 PPND16).

    Relative accuracy about 1e-16 over (0, 1); returns -inf/inf at 0/1 and nan
    outside [0, 1].
    """
    if not (p >= 0.0 and p <= 1.0):
        return np.nan
    if p == 0.0:
        return -np.inf
    if p == 1.0:
        return np.inf
    q = p - 0.5
    if abs(q) <= 0.425:
        return ndtri_central(p)
    r = p if q < 0.0 else 1.0 - p
    # For p > 0.5, 1 - p loses bits; use the symmetric form on the small tail.
    r = np.sqrt(-np.log(r))
    if r <= 5.0:
        x = ndtri_tail(r)
    else:
        r -= 5.0
        num = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r + 0.0012426609473880784386) * r
                   + 0.026532189526576123093) * r + 0.29656057182850489123) * r + 1.7848265399172913358) * r
                + 5.4637849111641143699) * r + 6.6579046435011037772)
        den = (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r + 1.8463183175100546818e-5) * r
                   + 7.868691311456132591e-4) * r + 0.0148753612908506148525) * r + 0.13692988092273580531) * r
                + 0.59983220655588793769) * r + 1.0)
        x = num / den
    return -x if q < 0.0 else x


@jit(inline="always")  # so that ndtri compiles as one function, as it did before
def ndtri_central(p):
    """:func:`ndtri` for ``abs(p - 0.5) <= 0.425``, without branches (for SIMD loops)."""
    q = p - 0.5
    r = 0.180625 - q * q
    num = (((((((2509.0809287301226727 * r + 33430.575583588128105) * r + 67265.770927008700853) * r
               + 45921.953931549871457) * r + 13731.693765509461125) * r + 1971.5909503065514427) * r
            + 133.14166789178437745) * r + 3.387132872796366608)
    den = (((((((5226.495278852545925 * r + 28729.085735721942674) * r + 39307.89580009271061) * r
               + 21213.794301586595867) * r + 5394.1960214247511077) * r + 687.1870074920579083) * r
            + 42.313330701600911252) * r + 1.0)
    return q * num / den


@jit(inline="always")  # so that ndtri compiles as one function, as it did before
def ndtri_tail(r):
    """:func:`ndtri`'s tail, ``|ndtri(p)|`` from ``r = sqrt(-log(min(p, 1 - p)))`` for ``r <= 5``, without
    branches (for SIMD loops)."""
    r -= 1.6
    num = (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r + 0.24178072517745061177) * r
               + 1.27045825245236838258) * r + 3.64784832476320460504) * r + 5.7694972214606914055) * r
            + 4.6303378461565452959) * r + 1.42343711074968357734)
    den = (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r + 0.0151986665636164571966) * r
               + 0.14810397642748007459) * r + 0.68976733498510000455) * r + 1.6763848301838038494) * r
            + 2.05319162663775882187) * r + 1.0)
    return num / den


# ---- batched draws: the same numbers as above, many counters at a time (SIMD-friendly loops)

PHILOX_ROUNDS = 10
_U32 = np.uint64(0xFFFFFFFF)  # counters and keys kept in uint64 lanes below 2**32 (a 32 x 32 -> 64 multiply)


@jit
def round_keys(key):
    """The Philox4x32-10 key schedule of ``key``: ``(rounds, 2)`` uint64 words, for :func:`uniform_block`."""
    rk = np.empty((PHILOX_ROUNDS, 2), np.uint64)
    k0 = np.uint64(key[0])
    k1 = np.uint64(key[1])
    for r in range(PHILOX_ROUNDS):
        rk[r, 0] = k0
        rk[r, 1] = k1
        k0 = (k0 + np.uint64(PHILOX_W0)) & _U32
        k1 = (k1 + np.uint64(PHILOX_W1)) & _U32
    return rk


@jit
def _unit53(hi, lo):
    """:func:`_to_unit` of two words held in uint64 lanes, bit for bit (each part converts exactly)."""
    k = np.float64(np.int32(hi >> np.uint64(6))) * 134217728.0 + np.float64(np.int32(lo >> np.uint64(5)))
    return (k + 0.5) * 1.1102230246251565e-16  # 2**-53


@jit
def uniform_block(rk, first_path, stream, first_draw, u0, u1):
    """``u0[j, i], u1[j, i] = uniform_pair(key, first_path + i, stream, first_draw + j)`` for every draw ``j`` and
    path ``i`` of ``u0`` (draws x paths), where ``rk = round_keys(key)``; ``u1`` may have no rows (first
    uniforms only).

    The loop over paths has the rounds unrolled and no branches, so the compiler evaluates several
    counters per instruction: the same numbers as :func:`uniform_pair`, bit for bit.
    """
    n_draws, n_paths = u0.shape
    pairs = u1.shape[0] > 0
    c3 = np.uint64(stream) & _U32
    for j in range(n_draws):
        c2_in = np.uint64(first_draw + j) & _U32
        for i in range(n_paths):
            p = np.uint64(first_path + i)
            c0 = p & _U32
            c1 = p >> _SHIFT32
            c2 = c2_in
            c3_r = c3
            for r in range(PHILOX_ROUNDS):
                p0 = c0 * PHILOX_M0
                p1 = c2 * PHILOX_M1
                c0, c1, c2, c3_r = ((p1 >> _SHIFT32) ^ c1 ^ rk[r, 0], p1 & _U32, (p0 >> _SHIFT32) ^ c3_r ^ rk[r, 1],
                                    p0 & _U32)
            u0[j, i] = _unit53(c0, c1)
            if pairs:
                u1[j, i] = _unit53(c2, c3_r)


@jit
def ndtri_array(u, z):
    """``z[j] = ndtri(u[j])`` for uniforms strictly inside (0, 1), the same bits, in SIMD-friendly passes.

    The central branch over all; the tails (``abs(u - 0.5) > 0.425``, 15%) gathered, their logarithms
    taken one by one, then the tail branch over them; the far tail (``r > 5``: ``u`` within 1.4e-11 of
    0 or 1) by :func:`ndtri` itself.
    """
    n = u.shape[0]
    for j in range(n):
        z[j] = ndtri_central(u[j])
    tail = np.empty(n, np.int64)
    n_tail = 0
    for j in range(n):
        tail[n_tail] = j
        n_tail += abs(u[j] - 0.5) > 0.425
    r = np.empty(n_tail)
    x = np.empty(n_tail)
    for i in range(n_tail):
        p = u[tail[i]]
        r[i] = -np.log(p if p < 0.5 else 1.0 - p)
    for i in range(n_tail):
        r[i] = np.sqrt(r[i])
        x[i] = ndtri_tail(r[i])
    for i in range(n_tail):
        j = tail[i]
        if r[i] > 5.0:
            z[j] = ndtri(u[j])
        else:
            z[j] = -x[i] if u[j] < 0.5 else x[i]


def uniforms(key, paths, stream, draws) -> np.ndarray:
    """Uniforms as a ``(len(paths), len(draws), 2)`` array (for tests and references)."""
    return _uniform_table(np.asarray(key, np.uint32), np.asarray(paths, np.int64), stream,
                          np.asarray(draws, np.int64))


@jit
def _uniform_table(key, paths, stream, draws):
    out = np.empty((paths.size, draws.size, 2))
    for i in range(paths.size):
        for j in range(draws.size):
            out[i, j, 0], out[i, j, 1] = uniform_pair(key, paths[i], stream, draws[j])
    return out
