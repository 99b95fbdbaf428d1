"""Where visits come from: referrer and UTM parameters to source, medium and campaign."""

from exporter.acquisition.referrers import ReferrerTable, Source
from exporter.acquisition.sources import (
    DIRECT, NO_CAMPAIGN, NO_MEDIUM, NOT_SET, Acquisition, Attribution, SourceRule,
)

__all__ = ["Acquisition", "Attribution", "ReferrerTable", "Source", "SourceRule", "DIRECT",
           "NO_CAMPAIGN", "NO_MEDIUM", "NOT_SET"]
