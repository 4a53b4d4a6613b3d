"""polymodal.eval: metrics, baselines, figures and the run report, all computed from embeddings.

Definitions follow CLIP_benchmark (LAION): zero-shot classification with prompt ensembling
(:mod:`~polymodal.eval.zeroshot`), retrieval recall@k (:mod:`~polymodal.eval.retrieval`), a logistic
regression linear probe (:mod:`~polymodal.eval.linear_probe`, needs scikit-learn). Baselines are in
:mod:`~polymodal.eval.baselines`, prompt templates in :mod:`~polymodal.models.prompts`, figures in
:mod:`~polymodal.eval.plots` (matplotlib) and the Markdown/HTML report in :mod:`~polymodal.eval.report`.

Import ``plots`` and ``linear_probe`` from their modules: they load matplotlib and scikit-learn, which
``import polymodal.eval`` does not.
"""

from polymodal.eval.baselines import (
    chance_retrieval_recall,
    chance_topk_accuracy,
    classification_baselines,
    majority_class_accuracy,
    retrieval_baselines,
)
from polymodal.eval.report import format_metrics_table, write_report
from polymodal.eval.retrieval import retrieval_metrics
from polymodal.eval.zeroshot import ClassificationMetrics, classification_metrics, zeroshot_classify
from polymodal.models.prompts import (
    DEFAULT_TEMPLATES,
    EMOJI_TEMPLATES,
    ICON_TEMPLATES,
    build_zeroshot_classifier,
    class_prompts,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "EMOJI_TEMPLATES",
    "ICON_TEMPLATES",
    "ClassificationMetrics",
    "build_zeroshot_classifier",
    "chance_retrieval_recall",
    "chance_topk_accuracy",
    "class_prompts",
    "classification_baselines",
    "classification_metrics",
    "format_metrics_table",
    "majority_class_accuracy",
    "retrieval_baselines",
    "retrieval_metrics",
    "write_report",
    "zeroshot_classify",
]
