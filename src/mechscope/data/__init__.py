"""Labeled text data: reading labeled files, and sets built offline from files the dependencies install.

    labeled:   read_labeled(path, text_field, label_field) -> LabeledTexts (csv, jsonl, parquet)
    sentiment: template sentences labeled by the VADER lexicon's human ratings (`make_sentiment_data`).
"""
from .labeled import LabeledTexts, read_labeled
from .sentiment import LABELS, make_sentiment_data, sentiment_lexicon, write_rows

__all__ = ["LabeledTexts", "read_labeled", "LABELS", "make_sentiment_data", "sentiment_lexicon", "write_rows"]
