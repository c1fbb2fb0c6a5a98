import math

import numpy as np
import pytest
import torch

from search_env.training.credit import (
    Segment,
    Trajectory,
    assign_credit,
    char_to_token,
    group_advantages,
    normalize_step_ig,
    normalize_turn_ig,
    token_advantages,
    token_span,
)

S3 = math.sqrt(1 / 3)  # unbiased std of [1, 1, 0, 0]


def test_group_advantages_by_hand():
    rewards = [1, 0, 0, 0, 1, 1, 0, 0]
    groups = ["a"] * 4 + ["b"] * 4
    # a: mean 0.25, unbiased std 0.5; b: mean 0.5, std sqrt(1/3)
    expected = [1.5, -0.5, -0.5, -0.5, 0.5 / S3, 0.5 / S3, -0.5 / S3, -0.5 / S3]
    np.testing.assert_allclose(group_advantages(rewards, groups), expected, rtol=1e-5)
    np.testing.assert_allclose(
        group_advantages(rewards, groups, scale=False), [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]
    )


def test_group_advantages_interleaved_groups_and_degenerate_groups():
    out = group_advantages([1.0, 3.0, 0.0, 5.0, 7.0], [0, 1, 0, 1, 2])
    r = 1 / math.sqrt(2)  # group 0: [1, 0] -> ±0.5 / sqrt(0.5); group 1: [3, 5] -> ±1 / sqrt(2); group 2: one rollout
    np.testing.assert_allclose(out, [r, -r, -r, r, 0.0], rtol=1e-5)
    np.testing.assert_array_equal(group_advantages([0, 0, 0], ["q"] * 3), [0, 0, 0])  # all failed: no outcome signal


def test_torch_in_torch_out():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float32)
    out = group_advantages(rewards, torch.tensor([7, 7, 7, 7]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([1.5, -0.5, -0.5, -0.5]), rtol=1e-5, atol=1e-6)
    tok = token_advantages(out, torch.tensor([[0, -1]] * 4), torch.tensor([[1.0]] * 4), ig_weight=0.5)
    assert isinstance(tok, torch.Tensor) and tok.shape == (4, 2)
    torch.testing.assert_close(tok[:, 1], out)
    torch.testing.assert_close(tok[:, 0], out + 0.5)
    numpy_out = group_advantages(np.array([1.0, 0.0]), ["x", "x"])
    assert isinstance(numpy_out, np.ndarray) and numpy_out.dtype == np.float64


def test_token_advantages_by_hand():
    out = token_advantages(
        [0.5], [[-1, 0, 0, -1, 1, 1, 2]], [[2.0, -0.3, np.nan]], ig_weight=0.5, ig_clip=1.0
    )
    # turn 0: IG 2.0 clipped to 1 -> +0.5; turn 1: -0.3 -> -0.15; turn 2: no IG -> nothing
    np.testing.assert_allclose(out, [[0.5, 1.0, 1.0, 0.5, 0.35, 0.35, 0.5]])
    unclipped = token_advantages([0.0], [[0, 1]], [[2.0, -0.3]], ig_weight=1.0, ig_clip=None)
    np.testing.assert_allclose(unclipped, [[2.0, -0.3]])
    masked = token_advantages([1.0], [[0, 0, -1]], [[1.0]], ig_weight=1.0, mask=[[1, 0, 1]])
    np.testing.assert_allclose(masked, [[2.0, 0.0, 1.0]])
    plain = token_advantages([0.7], [[0, 0]], [[5.0]], ig_weight=0.0)
    np.testing.assert_allclose(plain, [[0.7, 0.7]])


def test_normalize_step_ig_by_hand():
    ig = np.array([[1.0, np.nan], [3.0, np.nan], [4.0, 8.0], [0.5, np.nan]])
    out = normalize_step_ig(ig, ["a", "a", "b", "c"])
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(out[:2, 0], [-r, r], rtol=1e-5)  # a: mean 2, std sqrt(2)
    np.testing.assert_allclose(out[2], [-r, r], rtol=1e-5)  # b: both steps of one rollout
    assert out[3, 0] == 0.0  # a single step: centred to 0
    assert np.isnan(out[:2, 1]).all() and np.isnan(out[3, 1])


def test_normalize_step_ig_does_not_blow_up_baseline_noise():
    """The same query with other random draws: IG differs by ~3e-4 nats. Unfloored, that is ±1.2 z-scores."""
    noise = np.array([[0.5003], [0.4998], [0.5001], [0.4999]])
    out = normalize_step_ig(noise, ["g"] * 4)
    assert np.abs(out).max() < 0.01  # (x - mean) / 0.1 at most
    np.testing.assert_allclose(out[:, 0], (noise[:, 0] - noise.mean()) / (0.1 + 1e-6))
    spread = np.array([[0.0], [1.0]])  # a real difference (std 0.71 > floor) is z-scored as before
    np.testing.assert_allclose(
        normalize_step_ig(spread, ["g", "g"])[:, 0], [-1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-5
    )


def make_trajectory(group, reward, igs, prompt=(1, 2, 3)):
    """Two turns: '<think>…<search>q</search>' (query = last 3 tokens), passages, then a second search."""
    traj = Trajectory(list(prompt), group=group, reward=reward)
    traj.add_policy([10, 11, 12, 13, 14], query_span=(2, 5), ig=igs[0])
    traj.add_env([20, 21, 22])
    traj.add_policy([30, 31, 32], query_span=(0, 3), ig=igs[1])
    traj.add_env([40, 41])
    traj.add_policy([50, 51])  # the answer turn
    return traj


def test_trajectory_ids_masks_and_turns_are_exact():
    traj = make_trajectory("q", 1.0, [0.2, None])
    assert traj.input_ids == [1, 2, 3, 10, 11, 12, 13, 14, 20, 21, 22, 30, 31, 32, 40, 41, 50, 51]
    assert traj.completion_ids == traj.input_ids[3:]
    env = [20, 21, 22, 40, 41]
    policy = [10, 11, 12, 13, 14, 30, 31, 32, 50, 51]
    ids = np.array(traj.input_ids)
    assert ids[traj.env_mask()].tolist() == env
    assert ids[traj.loss_mask()].tolist() == policy
    assert not (traj.env_mask() & traj.loss_mask()).any()
    assert not traj.env_mask()[:3].any() and not traj.loss_mask()[:3].any()  # the prompt is neither
    assert [ids[s].tolist() for s in traj.segment_slices()] == [
        [10, 11, 12, 13, 14],
        [20, 21, 22],
        [30, 31, 32],
        [40, 41],
        [50, 51],
    ]
    assert traj.token_turns("query").tolist() == [-1] * 5 + [0, 0, 0] + [-1] * 3 + [1, 1, 1] + [-1] * 4
    assert traj.token_turns("turn").tolist() == [-1] * 3 + [0] * 5 + [-1] * 3 + [1] * 3 + [-1] * 2 + [2, 2]
    assert traj.step_ig == [0.2, None, None]


def test_all_failed_group_gets_advantages_exactly_on_query_tokens():
    trajs = [make_trajectory("q", 0.0, igs) for igs in ([0.4, -0.2], [0.5, None], [-1.5, 0.9])]
    batch = assign_credit(trajs, ig_weight=0.3, ig_clip=1.0)
    np.testing.assert_array_equal(batch.advantages, 0.0)
    nonzero = batch.token_advantages != 0
    scored = (batch.token_turns >= 0) & ~np.isnan(
        np.take_along_axis(batch.step_ig, np.maximum(batch.token_turns, 0), 1)
    )
    np.testing.assert_array_equal(nonzero, scored)  # exactly the query tokens of steps with IG
    np.testing.assert_allclose(batch.token_advantages[2, 5:8], -0.3)  # -1.5 clipped to -1, times 0.3
    np.testing.assert_allclose(batch.token_advantages[2, 11:14], 0.27)
    # per-group z-scored IG: still non-zero exactly there (no value equals the group mean)
    with pytest.warns(DeprecationWarning, match="turn"):
        normed = assign_credit(trajs, ig_weight=0.3, ig_norm="group")
    np.testing.assert_array_equal(normed.token_advantages != 0, scored)
    # plain GRPO: nothing to learn from this group
    assert not assign_credit(trajs, ig_weight=0.0).token_advantages.any()


def test_assign_credit_by_hand_with_padding():
    a = make_trajectory("q", 1.0, [0.5, None])
    b = Trajectory([1, 2], group="q", reward=0.0)
    b.add_policy([60, 61, 62], query_span=(1, 3), ig=-0.5)
    b.add_env([70])
    batch = assign_credit([a, b], pad_id=0, ig_weight=0.2, ig_clip=1.0)
    a_adv = 0.5 / math.sqrt(0.5)  # group mean 0.5, unbiased std sqrt(0.5)
    np.testing.assert_allclose(batch.advantages, [a_adv, -a_adv], rtol=1e-5)
    assert batch.input_ids.shape == (2, 18)
    assert batch.input_ids[1].tolist() == [1, 2, 60, 61, 62, 70] + [0] * 12
    assert batch.attention_mask[1].tolist() == [True] * 6 + [False] * 12
    assert batch.loss_mask[1].tolist() == [False, False, True, True, True] + [False] * 13
    expected_b = [0, 0, -a_adv, -a_adv - 0.1, -a_adv - 0.1] + [0] * 13
    np.testing.assert_allclose(batch.token_advantages[1], expected_b, rtol=1e-5)
    expected_a = np.zeros(18)
    expected_a[batch.loss_mask[0]] = a_adv
    expected_a[5:8] += 0.1
    np.testing.assert_allclose(batch.token_advantages[0], expected_a, rtol=1e-5)
    assert batch.prompt_lengths.tolist() == [3, 2]
    spread = assign_credit([a, b], ig_weight=0.2, spread="turn")
    np.testing.assert_allclose(spread.token_advantages[0, 3:8], a_adv + 0.1, rtol=1e-5)  # reasoning too
    tensors = batch.to_torch()
    assert tensors["token_advantages"].dtype == torch.float32 and tensors["input_ids"].dtype == torch.int64


def test_invalid_inputs():
    with pytest.raises(ValueError):
        Segment([1, 2], from_policy=True, query_span=(1, 3))
    with pytest.raises(ValueError):
        Segment([1, 2], from_policy=False, query_span=(0, 1))
    with pytest.raises(ValueError):
        group_advantages([1.0, 0.0], ["a"])
    with pytest.raises(ValueError):
        token_advantages([0.0], [[0, 1]], [[1.0]])  # turn 1 has no IG column
    with pytest.raises(ValueError):
        assign_credit([make_trajectory("q", 0.0, [None, None])], spread="everything")


PIECES = ["<think>", "hm", "</think>", "<se", "arch> fo", "o </search", ">\n", "tail"]


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def test_char_to_token_and_token_span():
    ids = list(range(len(PIECES)))
    text = decode(ids)
    start, end = text.index("<search>"), text.index("</search>") + len("</search>")
    assert token_span(decode, ids, start, end) == (3, 7)  # '<se' … '>\n' cover the tag
    assert decode(ids[3:7]).startswith("<search> foo </search>")
    ends = [len(decode(ids[: k + 1])) for k in ids]
    for char in range(len(text)):
        assert char_to_token(decode, ids, char) == next(k for k, e in enumerate(ends) if e > char)
    with pytest.raises(IndexError):
        char_to_token(decode, ids, len(text))


def test_normalize_turn_ig_by_hand():
    """Per (group, turn): turn 0 of group a is [1, 3, 5] (mean 3, std 2 > floor 0.6), turn 1 is [0.2, 0.5] (std
    0.212 < floor: divided by 0.6); group b's single scored turn-0 value is centred to 0."""
    ig = np.array([[1.0, 0.2], [3.0, np.nan], [5.0, 0.5], [7.0, np.nan]])
    out = normalize_turn_ig(ig, ["a", "a", "a", "b"], eps=0.0)
    np.testing.assert_allclose(out[:3, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(out[[0, 2], 1], [-0.15 / 0.6, 0.15 / 0.6])
    assert out[3, 0] == 0.0 and np.isnan(out[1, 1]) and np.isnan(out[3, 1])
    pooled = normalize_step_ig(ig, ["a", "a", "a", "b"], eps=0.0)  # the old rule mixes the turns: [1,3,5,.2,.5]
    assert pooled[0, 1] < 0 and pooled[0, 0] < 0 and not np.isclose(pooled[1, 0], 0.0)
    wide = normalize_turn_ig(ig, ["a"] * 4, floor=5.0, eps=0.0)[:, 0]
    np.testing.assert_allclose(wide, [-3 / 5, -1 / 5, 1 / 5, 3 / 5])


def test_turn_norm_in_an_all_failed_group_sums_to_zero_per_turn():
    trajs = [make_trajectory("q", 0.0, igs) for igs in ([0.4, -0.2], [0.5, None], [-1.5, 0.9])]
    batch = assign_credit(trajs, ig_weight=0.3, ig_clip=None, ig_norm="turn")
    first = np.array([0.4, 0.5, -1.5])  # std 1.127 > 0.6
    expected = (first - first.mean()) / (first.std(ddof=1) + 1e-6)
    np.testing.assert_allclose(batch.token_advantages[:, 5], 0.3 * expected, rtol=1e-6)
    second = np.array([-0.2, 0.9])  # std 0.778 > 0.6
    np.testing.assert_allclose(batch.token_advantages[[0, 2], 11], 0.3 * (second - 0.35) / (second.std(ddof=1) + 1e-6),
                               rtol=1e-6)
    assert batch.token_advantages[1, 11] == 0.0 and batch.token_advantages[:, 5].sum() == pytest.approx(0.0, abs=1e-12)
    floored = assign_credit(trajs, ig_weight=0.3, ig_clip=None, ig_norm="turn", ig_floor=10.0)
    np.testing.assert_allclose(floored.token_advantages[:, 5], 0.3 * (first - first.mean()) / (10.0 + 1e-6))


def test_search_credit_goes_on_the_search_turns_in_order():
    traj = make_trajectory("q", 0.0, [0.4, -0.2])
    traj.set_search_credit([1.5, None])
    assert traj.step_ig == [1.5, None, None]
    batch = assign_credit([traj], ig_weight=0.2, ig_clip=None)
    np.testing.assert_allclose(batch.token_advantages[0, 5:8], 0.3)
    assert not batch.token_advantages[0, 11:14].any()
    with pytest.raises(ValueError, match="2 search turns"):
        traj.set_search_credit([1.0])
