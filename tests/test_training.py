"""search_env.training: a run folder's checkpoints (the last one, and every N-th if asked), the held-out split,
and a dataclass as the command line."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from search_env import QADataset, build_world
from search_env.training.args import arg, parse_args
from search_env.training.run import last_checkpoint, load_checkpoint, save_checkpoint
from search_env.training.splits import held_out_split


class Saves:
    """A stand-in for a model or tokenizer: ``save_pretrained`` writes one small file."""

    def save_pretrained(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "weights.bin").write_bytes(b"w")


def saved_steps(root):
    return sorted(int(p.name.removeprefix("step_")) for p in root.glob("step_*"))


def test_only_the_last_checkpoint_is_kept_unless_every_nth_is_asked_for(tmp_path):
    for step in range(1, 6):
        save_checkpoint(tmp_path / "last", step, Saves(), Saves(), data_pos=step)
        save_checkpoint(tmp_path / "every2", step, Saves(), Saves(), keep_every=2, data_pos=step)
    assert saved_steps(tmp_path / "last") == [5]
    assert saved_steps(tmp_path / "every2") == [2, 4, 5]
    assert not list((tmp_path / "last").glob(".*"))  # no temporary folder left behind
    assert last_checkpoint(tmp_path / "every2") == tmp_path / "every2" / "step_000005"
    assert last_checkpoint(tmp_path / "none") is None


def test_a_checkpoint_restores_its_state_and_the_random_states(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    folder = save_checkpoint(tmp_path, 7, Saves(), Saves(), data_pos=42, optimizer={"lr": 0.1})
    expected = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(0)
    np.random.seed(0)
    state = load_checkpoint(folder)
    assert state["step"] == 7 and state["data_pos"] == 42 and state["optimizer"] == {"lr": 0.1}
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_held_out_split_is_fixed_and_hops_filter_both_parts():
    questions = build_world(seed=0).questions
    train, held_out = held_out_split(questions, 200)
    assert len(held_out) == 200 and len(train) == len(questions) - 200
    assert {q.id for q in train}.isdisjoint(q.id for q in held_out)
    train23, held23 = held_out_split(questions, 200, hops="2,3")
    assert [q.id for q in held23] == [q.id for q in held_out if q.metadata["hops"] in (2, 3)]
    assert [q.id for q in train23] == [q.id for q in train if q.metadata["hops"] in (2, 3)]
    assert held_out.name.endswith(":held-out") and train.name.endswith(":train")
    assert len(held_out_split(QADataset(list(questions)[:10]), 200)[1]) == 5  # at most half is held out


@dataclass
class Options:
    steps: int = arg(3, "steps")
    rate: float = arg(0.5, "rate, 5% a step")
    name: str | None = arg(None, "name")
    fast: bool = arg(True, "fast")


def test_parse_args_reads_a_dataclass_of_arg_fields():
    assert parse_args(Options, []) == Options()
    got = parse_args(Options, ["--steps", "7", "--rate", "1e-3", "--name", "x", "--no-fast"])
    assert got == Options(steps=7, rate=1e-3, name="x", fast=False)
    with pytest.raises(SystemExit):
        parse_args(Options, ["--steps", "many"])
    with pytest.raises(SystemExit):  # the help, with a "%" in it, is printed and exits 0
        parse_args(Options, ["--help"])
