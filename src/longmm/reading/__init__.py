"""Reading long documents: ingestion, text enhancement, retrieval and readers."""

from longmm.reading.document import Asset, Block, Chunk, Document
from longmm.reading.enhance import Chunker, clean_text, split_sentences
from longmm.reading.ingest import load_document, load_documents, text_document

__all__ = [
    "Asset",
    "Block",
    "Chunk",
    "Chunker",
    "Document",
    "clean_text",
    "load_document",
    "load_documents",
    "split_sentences",
    "text_document",
]
