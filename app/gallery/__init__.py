"""Face gallery for 1:N identification: subjects and faces in SQLite, searched through FAISS."""

from app.gallery.gallery import Gallery, GalleryStats, Match
from app.gallery.store import Face, FaceNotFound, Subject, SubjectNotFound

__all__ = ["Face", "FaceNotFound", "Gallery", "GalleryStats", "Match", "Subject", "SubjectNotFound"]
