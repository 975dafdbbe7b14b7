"""Data sources → DataCards: discover files under a directory, profile them (cached by hash), render for prompts."""

from synth.sources.card import ColumnProfile, DataCard, Document, ForeignKey, SourceError, TableProfile, ValueCount
from synth.sources.discover import DiscoveredFile, discover
from synth.sources.profile import (
    PROFILER_VERSION,
    ProfileLimits,
    SourceProfileError,
    default_cache_dir,
    profile,
    profile_all,
)

__all__ = [
    "PROFILER_VERSION",
    "ColumnProfile",
    "DataCard",
    "Document",
    "ForeignKey",
    "ProfileLimits",
    "SourceError",
    "DiscoveredFile",
    "SourceProfileError",
    "TableProfile",
    "ValueCount",
    "default_cache_dir",
    "discover",
    "profile",
    "profile_all",
]
