"""The command line as a whole: one vocabulary, shared options, aliases, one --data grammar, clear errors, and a
``--help`` that does not import torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from polymodal.cli import options
from polymodal.cli.main import cli, main
from polymodal.data.sources import BUILTINS, open_source, parse_source, require_source
from polymodal.errors import ConfigError

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "numpy", "PIL.Image", "sklearn", "matplotlib", "faiss")

VERBS = {
    "dual": {"train", "eval", "zeroshot", "embed"},
    "fuse": {"train", "eval", "robustness"},
    "caption": {"train", "run"},
    "generate": {"train", "run"},
    "flava": {"pretrain", "vqa"},
    "data": {"inspect", "preview", "shards"},
    "index": {"build", "add", "remove", "info", "compact", "repair"},
}
ALIASES = {"train": "dual train", "eval": "dual eval", "zeroshot": "dual zeroshot", "embed": "dual embed",
           "robustness": "fuse robustness", "shards": "data shards"}
# Commands that run for more than a few seconds: they show progress on stderr and --quiet silences it.
LONG = {"dual train", "demo", "dual eval", "dual embed", "fuse train", "fuse robustness", "caption train",
        "generate train", "flava pretrain", "flava vqa", "index build", "index add"}


def _commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Every command by its full name ("dual train"), groups included."""
    found: dict[str, click.Command] = {}
    for name, cmd in group.commands.items():
        full = f"{prefix}{name}"
        found[full] = cmd
        if isinstance(cmd, click.Group):
            found.update(_commands(cmd, full + " "))
    return found


COMMANDS = _commands()


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def test_help_imports_no_torch():
    # -X importtime names every module the interpreter imported, on stderr.
    r = _run("-X", "importtime", "-m", "polymodal", "--help")
    assert r.returncode == 0 and "dual" in r.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert "polymodal.cli.main" in imported
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_every_help_answers_without_heavy_imports():
    script = (
        "import sys\nfrom click.testing import CliRunner\nfrom polymodal.cli.main import cli\n"
        f"names = {sorted(COMMANDS)!r}\n"
        "for name in [''] + names:\n"
        "    r = CliRunner().invoke(cli, [*name.split(), '--help'])\n"
        "    assert r.exit_code == 0 and 'Usage: ' in r.output, (name, r.output)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    r = _run("-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_groups_have_their_verbs_and_the_old_names_are_aliases():
    for group, verbs in VERBS.items():
        assert set(COMMANDS[group].commands) == verbs, group  # type: ignore[attr-defined]
    for name, target in ALIASES.items():
        alias, real = COMMANDS[name], COMMANDS[target]
        assert alias.callback is real.callback and alias.params == real.params
        assert f"Alias of `polymodal {target}`" in CliRunner().invoke(cli, [name, "--help"]).output
    for top in ("demo", "search", "serve", "presets"):
        assert top in COMMANDS


CANONICAL = {  # what each shared option looks like wherever it appears
    "--data": ("SOURCE", options.SOURCE_GRAMMAR),
    "--model": ("DIR", ""),
    "--out": ("PATH", ""),
    "--json": (None, "print one JSON document on stdout"),
    "--seed": (None, "random seed"),
    "--quiet": (None, "no progress on stderr"),
}


def test_shared_options_mean_one_thing_everywhere():
    seen = dict.fromkeys(options.SHARED_OPTIONS, 0)
    for name, cmd in COMMANDS.items():
        help_text = CliRunner().invoke(cli, [*name.split(), "--help"]).output
        for p in cmd.params:
            if not isinstance(p, click.Option):
                continue
            shared = [o for o in p.opts if o in options.SHARED_OPTIONS]
            if not shared:
                continue
            seen[shared[0]] += 1
            assert shared[0] in help_text, (name, shared[0])  # listed in --help
            metavar, words = CANONICAL.get(shared[0], (None, ""))
            if metavar:
                assert p.metavar == metavar, (name, shared[0], p.metavar)
            assert words in (p.help or ""), (name, shared[0], p.help)
        if name in LONG:
            assert any("--quiet" in p.opts for p in cmd.params), f"{name} runs long: it needs --quiet"
    assert all(seen.values()), seen  # each shared option is used somewhere
    # one destination per option name: --model is read into model_dir (models when repeated), --json into as_json
    dests = {(o, p.name) for cmd in COMMANDS.values() for p in cmd.params for o in p.opts if o in options.SHARED_OPTIONS}
    assert {d for o, d in dests if o == "--model"} <= {"model_dir", "models"}
    assert {d for o, d in dests if o == "--json"} == {"as_json"}


def test_train_with_data_it_cannot_use_says_so(tmp_path, capsys):
    for argv in (["train"], ["dual", "train"]):
        assert main([*argv, "--data", "builtin:fsdd", "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: train needs image-text pairs; builtin:fsdd is audio with labels")
        assert "\n" not in err
    assert not (tmp_path / "run").exists()
    assert main(["fuse", "train", "--data", "builtin:openmoji", "--out", str(tmp_path / "f")]) == 2
    assert "fuse train needs a labelled multimodal set; builtin:openmoji is image-text pairs" in capsys.readouterr().err
    assert main(["fuse", "train", "--data", "builtin:avdigits:train", "--out", str(tmp_path / "f")]) == 2
    assert capsys.readouterr().err == ("error: fuse train reads the train and val splits; give builtin:avdigits, "
                                       "not builtin:avdigits:train\n")


def test_one_grammar_for_every_builtin_and_path(tmp_path):
    for name in BUILTINS:
        spec = parse_source(f"builtin:{name}:test")
        assert (spec.kind, spec.name, spec.split) == ("builtin", name, "test")
    (tmp_path / "cat").mkdir()
    (tmp_path / "m.csv").write_text("image,text\n")
    assert parse_source(tmp_path).kind == "folder"
    assert parse_source(tmp_path / "m.csv").kind == "manifest"
    assert parse_source("shards/shard-{000000..000002}.tar").kind == "shards"
    with pytest.raises(ConfigError, match="unknown builtin dataset 'nope'"):
        parse_source("builtin:nope")
    with pytest.raises(ConfigError, match="index build needs image files; builtin:noto is image-text pairs"):
        require_source("builtin:noto", command="index build", needs="image files", kinds=("folder",), builtins=())
    # The pair loader and the record sources read the same builtin sets (twemoji was the pair loader's alone).
    from polymodal.data.pairs import load_pairs

    pairs = load_pairs("builtin:twemoji:test")
    records = open_source("builtin:twemoji:test").load()
    assert pairs.keys == [r.key for r in records] and len(pairs) > 0
    with pytest.raises(ConfigError, match="is the test split; the train split was asked for"):
        load_pairs("builtin:twemoji:test", "train")


def test_data_inspect_takes_the_source_as_argument_or_data(tmp_path):
    runner = CliRunner()
    a = runner.invoke(cli, ["data", "inspect", "builtin:photos:test", "--json"])
    b = runner.invoke(cli, ["data", "inspect", "--data", "builtin:photos:test", "--json"])
    assert a.exit_code == b.exit_code == 0
    assert json.loads(a.output) == json.loads(b.output)
    assert runner.invoke(cli, ["data", "inspect"]).exit_code == 2


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory) -> Path:
    """A saved (untrained) late-fusion classifier: the kind of folder `fuse train` writes."""
    from polymodal.models.build import build_model, load_preset
    from polymodal.models.io import save

    path = tmp_path_factory.mktemp("fuse") / "fuse"
    config = load_preset("fusion-late").replace(labels=tuple(str(d) for d in range(10)))
    save(build_model(config), path)
    return path


def test_a_classifier_given_to_an_image_text_command_is_one_line(tmp_path, classifier_dir, capsys):
    from PIL import Image

    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    texts = tmp_path / "t.txt"
    texts.write_text("a\n")
    m = str(classifier_dir)
    cases = {
        "eval": ["eval", "--model", m, "--data", "builtin:photos"],
        "zeroshot": ["zeroshot", "--model", m, "--labels", "a,b", str(image)],
        "embed": ["embed", "--model", m, "--texts", str(texts), "--out", str(tmp_path / "e.npy")],
        "index build": ["index", "build", "--model", m, "--images", str(image), "--out", str(tmp_path / "idx")],
    }
    for command, argv in cases.items():
        assert main(argv) == 2, command
        err = capsys.readouterr().err
        assert err == f"error: {m} is a classifier; {command} needs an image-text model\n"
    assert not (tmp_path / "idx").exists() and not (tmp_path / "e.npy").exists()


def test_search_commands_without_faiss_name_the_extra(tmp_path, classifier_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    (tmp_path / "idx").mkdir()
    for argv in (["index", "build", "--model", str(classifier_dir), "--images", str(tmp_path), "--out",
                  str(tmp_path / "i")], ["search", str(tmp_path / "idx"), "a cat"], ["index", "info", str(tmp_path / "idx")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "needs faiss-cpu, which is not installed" in err and "polymodal[search]" in err and "\n" == err[-1]


def test_caption_without_a_verb_runs_and_equals_caption_run(tmp_path):
    import torch

    from polymodal.caption import CaptionConfig, Captioner
    from polymodal.models.io import save
    from polymodal.text import WordTokenizer

    torch.manual_seed(0)
    tok = WordTokenizer.build(["a red heart", "a blue circle"])
    cfg = CaptionConfig(vocab_size=tok.vocab_size, grid_cells=4, dim=16, heads=2, depth=1, max_length=6,
                        image_size=64)
    save(Captioner(cfg, tok).eval(), tmp_path / "m")
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "a.png")
    args = ["--model", str(tmp_path / "m"), "--json", str(tmp_path / "a.png")]
    runner = CliRunner()
    plain, verb = runner.invoke(cli, ["caption", *args]), runner.invoke(cli, ["caption", "run", *args])
    assert plain.exit_code == verb.exit_code == 0, plain.output
    assert json.loads(plain.output) == json.loads(verb.output)
    assert "Commands:" in runner.invoke(cli, ["caption", "--help"]).output  # the group's help, not a verb's


def test_an_alias_gives_the_group_verbs_result(tmp_path, capsys):
    from polymodal.models.aligner import Aligner, AlignerConfig
    from polymodal.models.io import save

    save(Aligner(AlignerConfig(image_size=64)), tmp_path / "m")
    from PIL import Image

    for i, colour in enumerate([(200, 0, 0), (0, 0, 200)]):
        Image.new("RGB", (32, 32), colour).save(tmp_path / f"{i}.png")
    args = ["--model", str(tmp_path / "m"), "--labels", "red,blue", str(tmp_path / "0.png"), str(tmp_path / "1.png"),
            "--json"]
    assert main(["zeroshot", *args]) == 0
    alias = json.loads(capsys.readouterr().out)
    assert main(["dual", "zeroshot", *args]) == 0
    assert json.loads(capsys.readouterr().out) == alias and len(alias) == 2


def test_index_data_reads_a_folder_as_its_images_and_refuses_a_builtin(tmp_path):
    from PIL import Image

    from polymodal.cli.search_cmds import _sources

    (tmp_path / "red").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8), (200, 0, 0)).save(tmp_path / "red" / name)
    by_data, bad = _sources((), str(tmp_path), "index build")
    by_images, _ = _sources((str(tmp_path),), None, "index build")
    assert [s.path for s in by_data] == [s.path for s in by_images] and len(by_data) == 2 and bad == []
    with pytest.raises(ConfigError, match="index build needs image files on disk; builtin:openmoji is image-text"):
        _sources((), "builtin:openmoji", "index build")


def test_training_shows_progress_on_stderr_and_quiet_silences_it(tmp_path, capsys):
    from PIL import Image

    rows = ["image,text,split"]
    for i, (name, colour) in enumerate([("red", (200, 0, 0)), ("blue", (0, 0, 200))] * 2):
        Image.new("RGB", (16, 16), colour).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,a {name} square,train")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    argv = ["generate", "train", "--data", str(tmp_path / "pairs.csv"), "--steps", "3", "--batch-size", "2",
            "--channels", "8"]
    assert main([*argv, "--out", str(tmp_path / "g1")]) == 0
    out, err = capsys.readouterr()
    assert "step 3/3: loss" in err and out.startswith("loss ") and "on 4 images" in out
    assert main([*argv, "--out", str(tmp_path / "g2"), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out.startswith("loss ")
    assert main([*argv, "--out", str(tmp_path / "g3"), "--json"]) == 0  # --json: one document, no progress
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)["pairs"] == 4
