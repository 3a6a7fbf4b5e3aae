"""Writing files (minicount/safeio.py) as the commands use it: stale temporaries removed,
outputs that cannot hold a file refused, one writer at a time, symlinks written through."""

import json
from pathlib import Path

import minicount as mc
from minicount.safeio import exclusive_lock

from .helpers import SHORT_RUN, TINY, one_error_line, run_cli, train_module


def test_stale_temporaries_are_removed_and_the_hint_is_only_for_this_run(tmp_path, monkeypatch):
    ck = tmp_path / "m.npz"
    mc.train(TINY, checkpoint=ck, **SHORT_RUN)  # an older run in the same path
    stale = tmp_path / "m.npz.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "loss_and_grads_sliced", interrupt)
    code, _, err = run_cli(["train", "--steps", "5", "--max-len", "4", "--out", ck])
    assert code == 130 and err.strip().splitlines()[-1] == "minicount train: interrupted"
    assert not stale.exists()
    assert mc.load_checkpoint(ck)["info"]["step"] == SHORT_RUN["steps"]  # the older run, untouched


def test_outputs_that_cannot_hold_a_file_are_refused(tmp_path, run_dir):
    (tmp_path / "folder").mkdir()
    existed = Path("/dev/null.npz").exists()
    for out in ("/dev/null", "/dev/full", tmp_path / "folder"):
        code, _, err = run_cli(["train", "--steps", "1", "--out", out])
        assert code == 2
        one_error_line(err, str(out))
        code, _, err = run_cli(["analyze", run_dir / "good.npz", "--n-eval", "4", "--out", out])
        assert code == 2
        one_error_line(err, str(out))
    assert existed or not Path("/dev/null.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]


def test_a_second_writer_gets_a_clear_error(tmp_path):
    out = tmp_path / "busy.npz"
    with exclusive_lock(out):  # another run is writing busy.npz
        code, _, err = run_cli(["train", "--steps", "1", "--out", out])
        assert code == 2
        one_error_line(err, "another minicount process is writing", str(out))
        code, _, err = run_cli(["analyze", "x.npz", "--out", tmp_path / "busy.npz"])
        assert code == 2 and "another minicount process" in err
    assert not out.exists()


def test_resume_and_analyze_write_through_symlinks(tmp_path, run_dir):
    real, link = tmp_path / "real.npz", tmp_path / "link.npz"
    real.write_bytes((run_dir / "good.npz").read_bytes())
    link.symlink_to(real)
    code, _, err = run_cli(["train", "--resume", link, "--steps", "6"])
    assert code == 0, err
    assert link.is_symlink() and mc.load_checkpoint(real)["info"]["step"] == 6
    report, report_link = tmp_path / "a.json", tmp_path / "a-link.json"
    report_link.symlink_to(report)
    code, _, err = run_cli(["analyze", real, "--n-eval", "8", "--out", report_link])
    assert code == 0, err
    assert report_link.is_symlink() and json.loads(report.read_text())["n_eval"] == 8
