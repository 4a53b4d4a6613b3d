"""Crash safety of training checkpoints: SIGKILL a save mid-way, the previous checkpoint still loads, and
the temporary folder the killed save left is removed by the next resume or save (#16 item 4)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polymodal.core import checkpoint as ck

pytestmark = pytest.mark.skipif(os.name == "nt", reason="SIGKILL and /proc are POSIX")

# The saving process: one whole checkpoint (epoch 1), then a second save that pauses once its weights
# are written, as an epoch's save does for a moment, and waits there to be killed.
DRIVER = r"""
import sys, time
import torch
from pathlib import Path
from polymodal.core import checkpoint as ck

path = Path(sys.argv[1])
weights = lambda v: {"w": torch.full((1024, 1024), float(v))}  # 4 MB, as a small model's trainable part
if not ck.find_checkpoint_dir(path):
    ck.save_checkpoint_dir(path, weights=weights(1), state={"epoch": 1}, config={"epoch": 1})

def paused(obj, f, *args, **kwargs):
    print("weights written", flush=True)
    time.sleep(120)

torch.save = paused
ck.save_checkpoint_dir(path, weights=weights(2), state={"epoch": 2}, config={"epoch": 2})
"""


def kill_mid_save(path: Path) -> list[Path]:
    """Run a save in a child process, SIGKILL it mid-way; the temporary folders it left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "weights written", proc.stderr.read() if proc.stderr else line
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def assert_checkpoint(path: Path, epoch: int) -> None:
    found = ck.find_checkpoint_dir(path)
    assert found == path
    assert ck.load_train_state(found)["epoch"] == epoch
    assert torch.equal(ck.load_weights(found / "model.safetensors")["w"], torch.full((1024, 1024), float(epoch)))


def test_a_save_killed_mid_way_keeps_the_last_checkpoint_and_its_leftovers_are_removed(tmp_path):
    path = tmp_path / "checkpoint"
    stale = kill_mid_save(path)
    assert len(stale) == 1 and (stale[0] / "model.safetensors").stat().st_size > 4_000_000
    # Resume: the epoch-1 checkpoint is whole, and looking for it clears the killed save's folder.
    assert_checkpoint(path, 1)
    assert not stale[0].exists()

    # Killed again; this time the next save clears it.
    stale = kill_mid_save(path)
    assert len(stale) == 1
    ck.save_checkpoint_dir(path, weights={"w": torch.full((1024, 1024), 3.0)}, state={"epoch": 3},
                           config={"epoch": 3})
    assert list(tmp_path.iterdir()) == [path]
    assert_checkpoint(path, 3)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd through /proc")
def test_checkpoint_files_and_folder_reach_the_disk_before_the_swap(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(f"replace {src} -> {dst}")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "checkpoint"
    ck.save_checkpoint_dir(path, weights={"w": torch.ones(3)}, state={"epoch": 1}, config={"epoch": 1})

    swap = next(i for i, e in enumerate(events) if e.endswith(f"-> {path}"))
    tmp = events[swap].split()[1]
    synced = {e.removeprefix("fsync ") for e in events[:swap] if e.startswith("fsync ")}
    for name in ("model.safetensors", "train_state.pt", "config.json"):
        # Files are fsync'ed under their temporary names, then renamed: the folder's fsync covers the names.
        assert any(Path(s).parent == Path(tmp) and name in Path(s).name for s in synced), (name, events)
    assert tmp in synced  # the folder, after its files and before it becomes the checkpoint
    assert f"fsync {tmp_path}" in events[swap:]  # the swap itself
