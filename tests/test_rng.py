"""The random numbers: Random123 known answers, the normal transform, uniform ranges."""

import numpy as np
import pytest
from scipy import special, stats

from models import rng

# Random123 tests/kat_vectors, philox4x32 10 rounds: counter (4 words), key (2 words) -> output (4 words).
KAT = [
    ((0x00000000, 0x00000000, 0x00000000, 0x00000000), (0x00000000, 0x00000000),
     (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF),
     (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(w) for w in rng.philox4x32(*counter, *key)) == expected


def test_philox_differs_from_identity_with_fewer_rounds():
    # The round count matters: 7 rounds must not give the 10-round answer.
    counter, key, expected = KAT[2]
    assert tuple(int(w) for w in rng.philox4x32(*counter, *key, 7)) != expected


def test_ndtri_matches_scipy_over_the_whole_range():
    p = np.concatenate([
        np.logspace(-300, -1, 3000),
        np.linspace(0.01, 0.99, 5001),
        1.0 - np.logspace(-16, -1, 1000),
        [np.nextafter(0.0, 1.0), 0.5, np.nextafter(1.0, 0.0)],
    ])
    mine = np.array([rng.ndtri(x) for x in p])
    ref = special.ndtri(p)
    away = np.abs(ref) > 1e-3  # relative error is meaningless at the zero crossing
    rel = np.abs(mine[away] - ref[away]) / np.abs(ref[away])
    assert rel.max() < 1e-14
    assert np.max(np.abs(mine[~away] - ref[~away])) < 1e-17


def test_ndtri_edges():
    assert rng.ndtri(0.0) == -np.inf
    assert rng.ndtri(1.0) == np.inf
    assert np.isnan(rng.ndtri(1.5))
    assert np.isnan(rng.ndtri(-0.1))


def test_uniforms_strictly_inside_unit_interval_and_uniform():
    key, _ = rng.key_from_seed(7)
    u = rng.uniforms(key, np.arange(20_000), rng.STREAM_SHOCKS, np.arange(5)).ravel()
    assert u.min() > 0.0 and u.max() < 1.0
    assert stats.kstest(u, "uniform").pvalue > 0.01


def test_numbers_depend_only_on_key_path_stream_and_draw():
    key, _ = rng.key_from_seed(11)
    whole = rng.uniforms(key, np.arange(100), 1, np.arange(10))
    part = rng.uniforms(key, np.arange(40, 60), 1, np.arange(3, 7))
    np.testing.assert_array_equal(whole[40:60, 3:7], part)
    other_stream = rng.uniforms(key, np.arange(100), 2, np.arange(10))
    assert not np.any(whole == other_stream)


def test_seed_sequence_gives_key_and_entropy():
    key, ss = rng.key_from_seed(123)
    assert key.dtype == np.uint32 and key.shape == (2,)
    assert ss.entropy == 123
    key2, _ = rng.key_from_seed(124)
    assert not np.array_equal(key, key2)


def test_normals_are_standard_normal():
    """The project's own normals (the kernel's batched transform), not scipy's."""
    key, _ = rng.key_from_seed(3)
    u = rng.uniforms(key, np.arange(50_000), 1, [1]).ravel()
    z = np.empty_like(u)
    rng.ndtri_array(u, z)
    assert stats.kstest(z, "norm").pvalue > 0.01


# ---- batched random numbers: the kernel draws many counters at a time; they must be the scalar ones


def test_uniform_block_equals_uniform_pair_bit_for_bit():
    key, _ = rng.key_from_seed(20250806)
    rk = rng.round_keys(key)
    for first, stream, draw in ((0, 1, 0), (2**32 - 5, 0, 7), (2**40 + 3, rng.STREAM_NAMED | 12345, 2**32 - 3)):
        u0, u1 = np.empty((4, 37)), np.empty((4, 37))
        rng.uniform_block(rk, first, stream, draw, u0, u1)
        for j in range(4):
            for i in range(37):
                assert (u0[j, i], u1[j, i]) == rng.uniform_pair(key, first + i, stream, (draw + j) % 2**32)


def test_ndtri_array_equals_ndtri_bit_for_bit_over_the_whole_range():
    u = np.concatenate([np.logspace(-300, -1, 2000), np.linspace(0.01, 0.99, 4001), 1.0 - np.logspace(-16, -1, 800),
                        [np.nextafter(0.0, 1.0), 0.075, 0.925, np.nextafter(1.0, 0.0)],
                        np.random.default_rng(1).random(5000)])
    z = np.empty_like(u)
    rng.ndtri_array(u, z)
    scalar = np.array([rng.ndtri(x) for x in u])
    np.testing.assert_array_equal(z, scalar)

