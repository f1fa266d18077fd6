"""The ``nci`` console script: dispatch, help, and clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from nci.cli import COMMANDS, main
from nci.manifest import write_manifest


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_fails_with_usage(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_ids_build_cli_and_missing_input(tmp_path):
    emb = tmp_path / "emb"
    emb.mkdir()
    np.save(emb / "embeddings.npy", np.random.default_rng(0).standard_normal((30, 4)).astype("f4"))
    (emb / "doc_ids.txt").write_text("\n".join(f"d{i}" for i in range(30)) + "\n")
    write_manifest(emb, stage="embed", config={"model": "test"})
    run = [sys.executable, "-m", "nci.semantic_ids", "build", "--embeddings", str(emb)]
    ok = subprocess.run(
        [*run, "--out", str(tmp_path / "ids"), "--k", "4", "--leaf-size", "4"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    lines = (tmp_path / "ids" / "docids.tsv").read_text().splitlines()
    assert len(lines) == 30 and lines[0].startswith("d")

    bad = subprocess.run(
        [*run, "--out", str(tmp_path / "ids2"), "--k", "4", "--leaf-size", "5"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "leaf size" in bad.stderr and "Traceback" not in bad.stderr

    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "nci.semantic_ids",
            "build",
            "--embeddings",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "ids3"),
        ],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "manifest.json" in missing.stderr
    assert not (tmp_path / "ids3").exists()
