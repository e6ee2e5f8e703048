"""Data that exists offline: labeled sets built from files installed with the package's dependencies.

    sentiment: template sentences labeled by the VADER lexicon's human ratings (`make_sentiment_data`).
"""
from .sentiment import LABELS, make_sentiment_data, sentiment_lexicon, write_rows

__all__ = ["LABELS", "make_sentiment_data", "sentiment_lexicon", "write_rows"]
