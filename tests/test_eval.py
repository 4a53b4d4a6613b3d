"""Tests of polymodal.eval: metrics against hand-computed golden values and reference implementations
(scikit-learn, CLIP_benchmark's definitions), baselines, figures and the report."""

from __future__ import annotations

import base64
import math
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from polymodal.data.record import BadRecord
from polymodal.errors import ConfigError, ShapeError
from polymodal.eval.baselines import (
    chance_retrieval_recall,
    chance_topk_accuracy,
    classification_baselines,
    majority_class_accuracy,
    retrieval_baselines,
)
from polymodal.eval.linear_probe import linear_probe
from polymodal.eval.report import format_metrics_table, write_report
from polymodal.eval.retrieval import retrieval_metrics
from polymodal.eval.zeroshot import (
    build_subclass_classifier,
    classification_metrics,
    subclass_classify,
    zeroshot_classify,
)
from polymodal.models.prompts import EMOJI_TEMPLATES, build_zeroshot_classifier, class_prompts

# ---------------------------------------------------------------- helpers





def fake_encode_text(texts: list[str], dim: int = 16) -> torch.Tensor:
    """A deterministic 'text tower': each text maps to a fixed random (unnormalised) vector."""
    rows = []
    for t in texts:
        g = torch.Generator().manual_seed(zlib.crc32(t.encode()))
        rows.append(torch.randn(dim, generator=g) * (1 + len(t) % 3))  # varied norms on purpose
    return torch.stack(rows)


def clip_benchmark_recalls(
    image_emb: torch.Tensor, text_emb: torch.Tensor, owner: torch.Tensor, k: int
) -> tuple[float, float]:
    """CLIP_benchmark's definition, written out unbatched: full score matrix and positive-pair mask."""
    scores = F.normalize(text_emb, dim=-1) @ F.normalize(image_emb, dim=-1).T  # (M texts, N images)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), owner] = True

    def recall(s: torch.Tensor, pos: torch.Tensor) -> float:
        top = s.topk(k, dim=1).indices
        true_pos = torch.gather(pos, 1, top).sum(dim=1)
        return (true_pos > 0).float().mean().item()

    return recall(scores, positive), recall(scores.T, positive.T)


class _StrictHTML(HTMLParser):
    """Checks that every opened element is closed in order; collects src/href attributes."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.refs: list[str] = []
        self.doctype = False

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def small_image(colour: tuple[int, int, int], size: int = 40) -> Image.Image:
    im = Image.new("RGB", (size, size), colour)
    im.paste((255, 255, 255), (size // 4, size // 4, size // 2, size // 2))
    return im


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 2000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        assert im.width > 200 and im.height > 200


# ---------------------------------------------------------------- zero-shot


def test_template_ensembling_equals_manual_average() -> None:
    classes = ["cat", "dog", "red apple"]
    templates = ["an emoji of {c}.", "a picture of {c}.", "{c}"]
    clf = build_zeroshot_classifier(fake_encode_text, classes, templates)
    assert clf.shape == (16, 3)
    for j, c in enumerate(classes):
        emb = fake_encode_text([t.replace("{c}", c) for t in templates])
        manual = F.normalize(emb, dim=-1).mean(0)
        manual = manual / manual.norm()
        torch.testing.assert_close(clf[:, j], manual)
    # Normalising each prompt before averaging matters: the plain mean of raw embeddings differs.
    raw = fake_encode_text([t.replace("{c}", "cat") for t in templates]).mean(0)
    assert not torch.allclose(clf[:, 0], raw / raw.norm(), atol=1e-3)


def test_per_class_templates_and_class_prompts() -> None:
    prompts = {"cat": ["a small {c}", "kitten"], "dog": ["a {c}"]}
    clf = build_zeroshot_classifier(fake_encode_text, ["cat", "dog"], prompts)
    cat = F.normalize(fake_encode_text(["a small cat", "kitten"]), dim=-1).mean(0)
    torch.testing.assert_close(clf[:, 0], cat / cat.norm())
    dog = fake_encode_text(["a dog"])[0]
    torch.testing.assert_close(clf[:, 1], dog / dog.norm())

    designed = class_prompts(["cat"], ["an emoji of {c}.", "{c}"], aliases={"cat": ["kitty"]})
    assert designed == {"cat": ["an emoji of cat.", "cat", "an emoji of kitty.", "kitty"]}
    assert all("{c}" in t for t in EMOJI_TEMPLATES)


def test_zeroshot_classifier_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        build_zeroshot_classifier(fake_encode_text, ["cat"], ["a photo"])
    with pytest.raises(ConfigError, match="dog"):
        build_zeroshot_classifier(fake_encode_text, ["cat", "dog"], {"cat": ["a cat"]})
    with pytest.raises(ShapeError, match="encode_text"):
        build_zeroshot_classifier(lambda t: torch.zeros(len(t) + 1, 4), ["cat"], ["{c}"])
    with pytest.raises(ShapeError, match="classifier"):
        zeroshot_classify(torch.randn(3, 8), torch.randn(5, 2))


def test_zeroshot_classify_is_scaled_cosine() -> None:
    img = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    clf = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=0)  # (D=2, C=2)
    logits = zeroshot_classify(img, clf)
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(logits, 100 * torch.tensor([[1.0, 0.0], [s, s]]))


def test_subclass_classifier_sums_member_probabilities() -> None:
    templates = ["{c}", "an emoji of {c}."]
    members = [["animal", "dog", "cat"], ["food"], ["place", "house"]]
    clf = build_subclass_classifier(fake_encode_text, members, templates)
    assert clf.weights.shape == (16, 6) and clf.owner.tolist() == [0, 0, 0, 1, 2, 2]
    # Each member column is that member's own prompt ensemble.
    flat = build_zeroshot_classifier(fake_encode_text, ["dog"], templates)
    torch.testing.assert_close(clf.weights[:, 1], flat[:, 0])

    img = torch.randn(5, 16)
    scale = 7.0
    logp = subclass_classify(img, clf, logit_scale=scale)
    probs = torch.softmax(scale * F.normalize(img, dim=-1) @ clf.weights, dim=1)  # (N, M), written out
    expected = torch.stack([probs[:, :3].sum(1), probs[:, 3], probs[:, 4:].sum(1)], dim=1)
    torch.testing.assert_close(logp.exp(), expected)
    torch.testing.assert_close(logp.exp().sum(1), torch.ones(5))

    # With one member per class the ranking is the flat prompt-ensemble classifier's.
    single = build_subclass_classifier(fake_encode_text, [["animal"], ["food"], ["place"]], templates)
    flat3 = build_zeroshot_classifier(fake_encode_text, ["animal", "food", "place"], templates)
    assert torch.equal(
        subclass_classify(img, single, logit_scale=scale).argmax(1), zeroshot_classify(img, flat3).argmax(1)
    )


def test_subclass_mass_beats_one_lucky_member() -> None:
    # Class 0 has three members each fairly close to the image; class 1 one member slightly closer.
    emb = {"a1": [1.0, 0.6, 0.0], "a2": [1.0, -0.6, 0.0], "a3": [1.0, 0.0, 0.6], "b": [1.0, 0.0, -0.45]}
    clf = build_subclass_classifier(lambda t: torch.tensor([emb[x] for x in t]), [["a1", "a2", "a3"], ["b"]], ["{c}"])
    img = torch.tensor([[1.0, 0.0, 0.0]])
    assert (F.normalize(img, dim=-1) @ clf.weights).argmax().item() == 3  # best single member: class 1
    assert subclass_classify(img, clf, logit_scale=10.0).argmax().item() == 0
    with pytest.raises(ConfigError, match="no member"):
        build_subclass_classifier(fake_encode_text, [["a"], []], ["{c}"])


def test_classification_metrics_golden() -> None:
    logits = torch.tensor(
        [
            [0.9, 0.05, 0.05],  # true 0, predicted 0
            [0.2, 0.5, 0.3],  # true 0, predicted 1; 0 is third
            [0.1, 0.7, 0.2],  # true 1, predicted 1
            [0.3, 0.6, 0.1],  # true 2, predicted 1; 2 is third
            [0.25, 0.3, 0.45],  # true 2, predicted 2
        ]
    )
    y = torch.tensor([0, 0, 1, 2, 2])
    m = classification_metrics(logits, y, topk=(1, 2, 5))
    assert m.top1 == pytest.approx(3 / 5)
    assert m.topk[2] == pytest.approx(3 / 5)  # the two misses have their class third
    assert m.top5 == 1.0  # k=5 > C=3 is clipped to 3 guesses
    # Recalls per class: 1/2, 1/1, 1/2 -> mean 2/3.
    assert m.mean_per_class_recall == pytest.approx(2 / 3)
    np.testing.assert_array_equal(m.confusion_matrix, [[1, 1, 0], [0, 1, 0], [0, 1, 1]])
    assert m.confusion_matrix.dtype.kind == "i"
    assert m.to_dict()["top2"] == pytest.approx(0.6) and "confusion_matrix" not in m.to_dict()


def test_classification_metrics_match_sklearn() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=g)
    y = torch.randint(0, 6, (200,), generator=g)  # class 6 never occurs in the targets
    logits[torch.arange(100), y[:100]] += 1.5  # better than chance so the numbers are not trivial
    m = classification_metrics(logits.numpy(), y.numpy(), topk=(1, 3, 5))
    pred = logits.argmax(1).numpy()
    with pytest.warns(UserWarning):  # sklearn warns that class 6 is predicted but absent
        ref = balanced_accuracy_score(y.numpy(), pred)
    assert m.mean_per_class_recall == pytest.approx(ref)
    for k in (1, 3, 5):
        assert m.topk[k] == pytest.approx(top_k_accuracy_score(y.numpy(), logits.numpy(), k=k, labels=range(7)))
    assert m.confusion_matrix.sum() == 200


def test_classification_metrics_rejects_bad_targets() -> None:
    with pytest.raises(ShapeError, match="targets"):
        classification_metrics(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    with pytest.raises(ShapeError, match="targets"):
        classification_metrics(torch.randn(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="logits"):
        classification_metrics(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))


# ---------------------------------------------------------------- retrieval


def test_retrieval_golden_3x3() -> None:
    # Images are the basis vectors, so sim[text j, image i] = text_j[i] / |text_j|; each text row is a
    # permutation of (0.8, 0.5, 0.1) (same norm, so ranks read off directly) and each column is too.
    images = torch.eye(3)
    texts = torch.tensor([[0.8, 0.5, 0.1], [0.1, 0.8, 0.5], [0.5, 0.1, 0.8]])
    owner = torch.tensor([0, 2, 1])
    # text->image rank of the own image: t0 -> img0 (0.8) 1st; t1 -> img2 (0.5) 2nd; t2 -> img1 (0.1) 3rd.
    # image->text: img0 column (0.8, 0.1, 0.5) puts t0 1st; img1 (0.5, 0.8, 0.1) puts t2 3rd;
    # img2 (0.1, 0.5, 0.8) puts t1 2nd.
    m = retrieval_metrics(images, texts, owner, ks=(1, 2, 3, 10))
    for direction in ("image", "text"):
        assert m[f"{direction}_retrieval_recall@1"] == pytest.approx(1 / 3)
        assert m[f"{direction}_retrieval_recall@2"] == pytest.approx(2 / 3)
        assert m[f"{direction}_retrieval_recall@3"] == pytest.approx(1.0)
        assert m[f"{direction}_retrieval_recall@10"] == pytest.approx(1.0)  # k > N is clipped


def test_retrieval_several_texts_per_image() -> None:
    def unit(deg: float) -> list[float]:
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([unit(10), unit(80), unit(30), unit(60)])
    owner = torch.tensor([0, 0, 1, 1])
    m = retrieval_metrics(images, texts, owner, ks=(1, 2))
    # text->image: t0 and t3 find their image first, t1 and t2 second.
    assert m["image_retrieval_recall@1"] == pytest.approx(0.5)
    assert m["image_retrieval_recall@2"] == pytest.approx(1.0)
    # image->text: img0 ranks t0 (10 deg) first -> hit; img1 ranks t1 (80 deg), then t3 (its own) second.
    assert m["text_retrieval_recall@1"] == pytest.approx(0.5)
    assert m["text_retrieval_recall@2"] == pytest.approx(1.0)


@pytest.mark.parametrize("batch_size", [1, 7, 1024])
def test_retrieval_matches_clip_benchmark_definition(batch_size: int) -> None:
    g = torch.Generator().manual_seed(1)
    n, per, dim = 23, 3, 12
    images = torch.randn(n, dim, generator=g)
    owner = torch.arange(n).repeat_interleave(per)[torch.randperm(n * per, generator=g)]
    texts = images[owner] + 1.3 * torch.randn(n * per, dim, generator=g)  # noisy captions
    m = retrieval_metrics(images, texts, owner, ks=(1, 5, 10), batch_size=batch_size)
    for k in (1, 5, 10):
        image_r, text_r = clip_benchmark_recalls(images, texts, owner, k)
        assert m[f"image_retrieval_recall@{k}"] == pytest.approx(image_r)
        assert m[f"text_retrieval_recall@{k}"] == pytest.approx(text_r)
    assert 0 < m["image_retrieval_recall@1"] < m["image_retrieval_recall@10"] < 1


def test_retrieval_rejects_bad_input() -> None:
    with pytest.raises(ShapeError, match="no text"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="text_emb"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="text_to_image"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(2, 4), torch.tensor([0, 2]))


# ---------------------------------------------------------------- linear probe


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(3, 8))
    y = rng.integers(0, 3, n)
    return centres[y] + 1.2 * rng.normal(size=(n, 8)), y


def test_linear_probe_chooses_C_on_validation_only() -> None:
    (xtr, ytr), (xva, yva), (xte, yte) = _blobs(90, 0), _blobs(45, 1), _blobs(45, 2)
    Cs = (0.001, 0.1, 10.0)
    res = linear_probe(xtr, ytr, xva, yva, xte, yte, Cs=Cs)

    # Reference: the same sweep by hand with scikit-learn on L2-normalised features.
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    val = {}
    for C in Cs:
        model = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(unit(xtr), ytr)
        val[C] = float((model.predict(unit(xva)) == yva).mean())
    assert res.val_accuracy == pytest.approx(val)
    best = max(val.values())
    assert res.chosen_C == min(C for C in Cs if val[C] == best)
    assert res.chosen_C != 0.001  # C=0.001 all but ignores the data; the sweep must see that
    final = LogisticRegression(C=res.chosen_C, max_iter=1000, random_state=0)
    final.fit(unit(np.concatenate([xtr, xva])), np.concatenate([ytr, yva]))
    pred = final.predict(unit(xte))
    assert res.accuracy == pytest.approx(float((pred == yte).mean()))
    assert res.mean_per_class_recall == pytest.approx(balanced_accuracy_score(yte, pred))
    assert res.refit_on == "train+val"

    # The test labels cannot influence the choice: permuting them changes the score, not C.
    shuffled = np.random.default_rng(5).permutation(yte)
    res2 = linear_probe(xtr, ytr, xva, yva, xte, shuffled, Cs=Cs)
    assert res2.chosen_C == res.chosen_C and res2.val_accuracy == res.val_accuracy
    assert res2.accuracy != res.accuracy


def test_linear_probe_rejects_bad_input() -> None:
    x, y = _blobs(12, 0)
    with pytest.raises(ShapeError, match="feature dims"):
        linear_probe(x, y, x[:, :4], y, x, y)
    with pytest.raises(ConfigError, match="Cs"):
        linear_probe(x, y, x, y, x, y, Cs=(0.0,))
    with pytest.raises(ShapeError, match="two classes"):
        linear_probe(x, np.zeros(12, dtype=int), x, y, x, y)


# ---------------------------------------------------------------- baselines


def test_classification_baselines_golden() -> None:
    train, test = [0, 0, 0, 1, 1, 2], [0, 1, 1, 2, 3]
    assert majority_class_accuracy(train, test) == pytest.approx(1 / 5)
    assert majority_class_accuracy(train, test, k=2) == pytest.approx(3 / 5)
    b = classification_baselines(train, test, 4, topk=(1, 2), prefix="zs/")
    assert b["majority"]["zs/top1"] == pytest.approx(1 / 5)
    assert b["majority"]["zs/top2"] == pytest.approx(3 / 5)
    assert b["majority"]["zs/top5"] == pytest.approx(1.0)
    assert b["majority"]["zs/mean_per_class_recall"] == pytest.approx(1 / 4)  # 4 classes occur in test
    assert b["chance"] == pytest.approx({"zs/top1": 0.25, "zs/top2": 0.5, "zs/top5": 1.0, "zs/mean_per_class_recall": 0.25})
    assert chance_topk_accuracy(10, 5) == 0.5

    # The majority baseline is the metric of a classifier that always scores classes by train frequency.
    counts = torch.bincount(torch.tensor(train), minlength=4).float()
    constant = classification_metrics(counts.expand(5, 4), torch.tensor(test), topk=(1, 2))
    assert constant.top1 == pytest.approx(b["majority"]["zs/top1"])
    assert constant.topk[2] == pytest.approx(b["majority"]["zs/top2"])
    assert constant.mean_per_class_recall == pytest.approx(b["majority"]["zs/mean_per_class_recall"])


def test_retrieval_chance_golden_and_simulated() -> None:
    assert chance_retrieval_recall(5, 100) == pytest.approx(0.05)
    assert chance_retrieval_recall(20, 10) == 1.0
    # Two positives among 4, k=2: misses only if both picks are among the 2 negatives: 1 - 1/6.
    assert chance_retrieval_recall(2, 4, num_positives=2) == pytest.approx(5 / 6)

    owner = torch.tensor([0, 0, 0, 1, 2, 3, 4, 4])
    chance = retrieval_baselines(owner, 5, ks=(1, 2))["chance"]
    # Random embeddings should score the chance values on average.
    g = torch.Generator().manual_seed(3)
    draws = [retrieval_metrics(torch.randn(5, 32, generator=g), torch.randn(8, 32, generator=g), owner, ks=(1, 2))
             for _ in range(600)]
    for key, value in chance.items():
        assert np.mean([d[key] for d in draws]) == pytest.approx(value, abs=0.03), key


# ---------------------------------------------------------------- plots


def test_plots_write_pngs(tmp_path: Path) -> None:
    from polymodal.eval.plots import (
        plot_confusion_matrix,
        plot_retrieval_examples,
        plot_similarity_heatmap,
        plot_training_curves,
    )

    history = [{"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3 / e, "val_r1_i2t": 0.1 * e,
                "val_image_retrieval_recall@1": 0.08 * e} for e in range(1, 5)]
    history[2].pop("lr")  # gaps are allowed
    assert_png(plot_training_curves(history, tmp_path / "curves.png"))

    images = [small_image((40 * i, 100, 200)) for i in range(4)]
    texts = [f"a smiling face number {i} with a long description" for i in range(4)]
    sim = np.random.default_rng(0).uniform(-0.2, 0.8, (4, 4))
    assert_png(plot_similarity_heatmap(sim, images, texts, tmp_path / "sim.png"))
    assert_png(plot_similarity_heatmap(sim[:, :3], None, texts[:3], tmp_path / "sim_plain.png"))

    topk = [[(texts[(i + j) % 4], 0.9 - 0.1 * j) for j in range(3)] for i in range(3)]
    topk[1] = [(texts[3], 0.5), (texts[0], 0.4)]  # true text missed, fewer results
    assert_png(plot_retrieval_examples(images[:3], topk, texts[:3], tmp_path / "sub" / "retrieval.png"))

    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # a class without samples must not divide by zero
    assert_png(plot_confusion_matrix(cm, ["cat", "dog", "bird"], tmp_path / "cm.png"))
    assert_png(plot_confusion_matrix(cm, ["cat", "dog", "bird"], tmp_path / "cm_counts.png", normalize=False))

    with pytest.raises(ShapeError, match="col_texts"):
        plot_similarity_heatmap(sim, images, texts[:2], tmp_path / "bad.png")
    with pytest.raises(ShapeError, match="classnames"):
        plot_confusion_matrix(cm, ["cat"], tmp_path / "bad.png")
    with pytest.raises(ConfigError, match="history"):
        plot_training_curves([], tmp_path / "bad.png")


# ---------------------------------------------------------------- report


def test_format_metrics_table() -> None:
    table = format_metrics_table(
        {"top1": 0.5, "image_retrieval_recall@1": 0.25, "probe_C": "10"},
        {"chance": {"top1": 0.1, "image_retrieval_recall@1": 0.05}, "untrained": {"top1": 0.6}},
    )
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "chance", "Δ", "vs", "chance", "untrained", "Δ", "vs", "untrained"]
    top1 = next(line for line in lines if line.startswith("top1"))
    assert top1.split() == ["top1", "0.5000", "0.1000", "+0.4000", "0.6000", "-0.1000"]
    r1 = next(line for line in lines if line.startswith("image_retrieval"))
    assert r1.split()[-2:] == ["—", "—"]
    # Columns are aligned: every value ends at the same offset as its header.
    assert len(top1) == len(lines[1])


def test_write_report(tmp_path: Path) -> None:
    fig = tmp_path / "figures" / "fig.png"
    fig.parent.mkdir()
    small_image((10, 120, 200)).save(fig)
    bad = [BadRecord("data/a.csv", "image file missing", row=3), BadRecord("data/b<1>.png", "not an <image>")]
    metrics = {"top1": 0.42, "text_retrieval_recall@1": 0.3, "train_loss": 0.7}
    baselines = {"chance": {"top1": 0.1, "text_retrieval_recall@1": 0.01}, "raw towers": {"train_loss": 0.9}}
    out = write_report(tmp_path, title="Run <1>", metrics=metrics, baselines=baselines,
                       figures={"Curves": fig, "Gone": tmp_path / "missing.png"}, bad_records=bad,
                       notes=["seed 0"])
    assert out == tmp_path / "report.html"

    md = (tmp_path / "report.md").read_text()
    for text in ("top1", "text_retrieval_recall@1", "+0.3200", "data/a.csv", "data/b<1>.png",
                 "Skipped records (2)", "](figures/fig.png)", "Figure missing", "seed 0"):
        assert text in md, text

    page = out.read_text()
    parser = _StrictHTML()
    parser.feed(page)
    parser.close()
    assert parser.doctype and not parser.errors and parser.stack == []
    assert not re.search(r"https?://", page)  # self-contained: no CDN, no remote images
    assert all(ref.startswith("data:") for ref in parser.refs) and len(parser.refs) == 1
    assert base64.b64decode(parser.refs[0].split(",", 1)[1]) == fig.read_bytes()
    for text in ("top1", "text_retrieval_recall@1", "data/a.csv", "data/b&lt;1&gt;.png", "not an &lt;image&gt;",
                 "Skipped records (2)", "Run &lt;1&gt;"):
        assert text in page, text
    assert '<td class="num pos">+0.3200</td>' in page
    assert '<td class="num pos">-0.2000</td>' in page  # a lower loss is the better direction


def test_write_report_rejects_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baselines"):
        write_report(tmp_path, title="x", metrics={}, baselines={"chance": 0.1}, figures={},  # type: ignore[dict-item]
                     bad_records=[], notes=[])
