"""Cross-modal search: an index of image embeddings (faiss + SQLite), queries, a server and its web page.

    from polymodal.search import Searcher, update_index, sources_from_images
    update_index(polymodal.load("runs/demo"), "my-index", sources_from_images(["photos/"]), sync=True,
                 model_dir="runs/demo")
    hits = Searcher.open("my-index").by_text("a red heart", k=10)
"""

from polymodal.search.ann import AnnConfig, AnnInfo
from polymodal.search.index import GenerationInfo, Hit, Item, ItemFilter, SearchIndex
from polymodal.search.ingest import (
    BuildConfig,
    BuildReport,
    Source,
    compact_index,
    remove_items,
    repair_index,
    sources_from_images,
    sources_from_manifest,
    update_index,
)
from polymodal.search.query import LabelScore, Searcher, TextHit
from polymodal.search.writer import IndexWriter, NewItem

__all__ = [
    "AnnConfig", "AnnInfo", "BuildConfig", "BuildReport", "GenerationInfo", "Hit", "IndexWriter", "Item",
    "ItemFilter", "LabelScore", "NewItem", "SearchIndex", "Searcher", "Source", "TextHit", "compact_index",
    "remove_items", "repair_index",
    "sources_from_images", "sources_from_manifest", "update_index",
]
