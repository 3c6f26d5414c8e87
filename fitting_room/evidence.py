"""Hard evidence from a finished session's scans, and the reasons a floor manager reads.

Ids are compared after normalisation and as multisets: two tags of one SKU taken in and one
scanned out leaves one missing. A missing item is in the entry scans but not the exit scans;
an unexpected item is in the exit scans but not the entry scans. An unexpected item of the
same category as a missing one and cheaper than it is a probable tag swap (the cheap tag left
on the expensive garment).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from fitting_room.catalog import Catalog, Item, normalize_item_id


@dataclass(frozen=True)
class Reason:
    """One human-readable reason behind a verdict; `code` is stable, `message` is for people."""

    code: str
    message: str


@dataclass(frozen=True)
class EvidenceItem:
    """A scanned item in a piece of evidence; unknown ids carry the catalogue's typical price."""

    item_id: str  # as in the database, or the raw id stripped when unknown
    category: str | None  # None when the id is not in the database
    price: float
    known: bool


@dataclass(frozen=True)
class TagSwap:
    """An unexpected item that probably carries the tag of a dearer missing item of its category."""

    unexpected: EvidenceItem
    missing: EvidenceItem

    @property
    def discount(self) -> float:
        """How much cheaper the unexpected item is, as a fraction of the missing item's price (0-1)."""
        if self.missing.price <= 0:
            return 0.0
        return 1.0 - self.unexpected.price / self.missing.price


@dataclass(frozen=True)
class Evidence:
    """Everything the scans alone prove about one session."""

    missing: tuple[EvidenceItem, ...]
    unexpected: tuple[EvidenceItem, ...]
    swaps: tuple[TagSwap, ...]
    taken_in_prices: tuple[float, ...] = ()  # price of each entry scan (unknown ids at the typical price)

    @property
    def has_evidence(self) -> bool:
        """Whether any item is missing or unexpected."""
        return bool(self.missing or self.unexpected)

    @property
    def missing_value(self) -> float:
        """Total price of the missing items (store currency); higher is worse."""
        return sum(item.price for item in self.missing)

    @property
    def taken_in_value(self) -> float:
        """Total price of the items scanned in."""
        return sum(self.taken_in_prices)

    @property
    def dearest_missing_rank(self) -> float:
        """Share of the other items taken in that are cheaper than the dearest missing one (0-1).

        1 means the dearest item went missing. Thieves pick expensive items while a misread or
        forgotten tag hits any item, so values near 1 are more suspicious. 0 when nothing is
        missing, 0.5 (no information) for a single-item basket.
        """
        if not self.missing:
            return 0.0
        if len(self.taken_in_prices) < 2:
            return 0.5
        dearest = max(item.price for item in self.missing)
        cheaper = sum(price < dearest for price in self.taken_in_prices)
        return cheaper / (len(self.taken_in_prices) - 1)

    @property
    def swap_value(self) -> float:
        """Price lost to probable tag swaps: missing price minus the cheaper tag's price; higher is worse."""
        return sum(s.missing.price - s.unexpected.price for s in self.swaps)


def collect_evidence(entry_scans: Sequence[str], exit_scans: Sequence[str], catalog: Catalog) -> Evidence:
    """Missing items, unexpected items and probable tag swaps of a finished session."""
    # This runs once per exit check. The usual exit (the very tags scanned in) has nothing to match; otherwise
    # each id is normalised once and each distinct id looked up once.
    typical_price = catalog.typical_item.price
    if list(entry_scans) == list(exit_scans):
        prices = tuple(typical_price if (item := catalog.lookup(raw)) is None else item.price for raw in entry_scans)
        return Evidence(missing=(), unexpected=(), swaps=(), taken_in_prices=prices)
    entry_keys = [normalize_item_id(raw) for raw in entry_scans]
    exit_keys = [normalize_item_id(raw) for raw in exit_scans]
    found: dict[str, Item | None] = {}
    for raw, key in zip(entry_scans, entry_keys, strict=True):
        if key not in found:
            found[key] = catalog.lookup(raw)
    taken_in_prices = tuple(typical_price if (item := found[key]) is None else item.price for key in entry_keys)
    missing = tuple(
        _described(entry_scans[i], found[entry_keys[i]], catalog) for i in _unmatched(entry_keys, exit_keys)
    )
    unexpected_at = _unmatched(exit_keys, entry_keys)
    for i in unexpected_at:
        if exit_keys[i] not in found:
            found[exit_keys[i]] = catalog.lookup(exit_scans[i])
    unexpected = tuple(_described(exit_scans[i], found[exit_keys[i]], catalog) for i in unexpected_at)
    return Evidence(
        missing=missing,
        unexpected=unexpected,
        swaps=_match_swaps(missing, unexpected),
        taken_in_prices=taken_in_prices,
    )


def sessions_with_evidence(entry_scans: Sequence[Sequence[str]], exit_scans: Sequence[Sequence[str]]) -> np.ndarray:
    """Per session, whether collect_evidence would find any missing or unexpected item (vectorised)."""
    n = len(entry_scans)
    entry_len = np.fromiter(map(len, entry_scans), dtype=np.int64, count=n)
    exit_len = np.fromiter(map(len, exit_scans), dtype=np.int64, count=n)
    differs = entry_len != exit_len
    # Same length: the multisets are equal exactly when the sorted matching keys agree.
    same = np.flatnonzero(~differs)
    entry_flat = list(chain.from_iterable(entry_scans[i] for i in same.tolist()))
    exit_flat = list(chain.from_iterable(exit_scans[i] for i in same.tolist()))
    codes: dict[str, int] = {}
    code_of = {raw: codes.setdefault(normalize_item_id(raw), len(codes)) for raw in {*entry_flat, *exit_flat}}
    # Sort keys session-major (rank * width + id code), so each session is one aligned block in both arrays.
    width = max(len(codes), 1)
    rank = np.repeat(np.arange(len(same), dtype=np.int64), entry_len[same]) * width
    entry_keys = np.sort(rank + np.fromiter(map(code_of.__getitem__, entry_flat), np.int64, len(entry_flat)))
    exit_keys = np.sort(rank + np.fromiter(map(code_of.__getitem__, exit_flat), np.int64, len(exit_flat)))
    differs[same[entry_keys[entry_keys != exit_keys] // width]] = True
    return differs


def evidence_reasons(evidence: Evidence, currency: str = "€") -> list[Reason]:
    """Reasons for the evidence, most serious first: tag swaps, unexplained missing, unexplained unexpected."""
    reasons = [_swap_reason(swap) for swap in evidence.swaps]
    swapped_missing = {id(s.missing) for s in evidence.swaps}
    swapped_unexpected = {id(s.unexpected) for s in evidence.swaps}
    missing = [m for m in evidence.missing if id(m) not in swapped_missing]
    unexpected = [u for u in evidence.unexpected if id(u) not in swapped_unexpected]
    if missing:
        noun = "item" if len(missing) == 1 else "items"
        listed = ", ".join(_label(m, currency) for m in missing)
        reasons.append(Reason("missing_items", f"{len(missing)} {noun} not scanned out: {listed}"))
    if unexpected:
        noun = "item" if len(unexpected) == 1 else "items"
        verb = "was" if len(unexpected) == 1 else "were"
        listed = ", ".join(_label(u, currency) for u in unexpected)
        reasons.append(
            Reason(
                "unexpected_items",
                f"{len(unexpected)} {noun} scanned out that {verb} never scanned in: {listed}",
            )
        )
    return reasons


def _unmatched(keys: Sequence[str], other_keys: Sequence[str]) -> list[int]:
    """Positions in `keys` left over once each of `other_keys` has matched the earliest unmatched equal key."""
    available: dict[str, int] = {}
    for key in other_keys:
        available[key] = available.get(key, 0) + 1
    leftover: list[int] = []
    for i, key in enumerate(keys):
        count = available.get(key, 0)
        if count:
            available[key] = count - 1
        else:
            leftover.append(i)
    return leftover


def _described(raw: str, item: Item | None, catalog: Catalog) -> EvidenceItem:
    """EvidenceItem for a raw id already looked up (`item` None when the catalogue lacks it)."""
    if item is None:
        return EvidenceItem(raw.strip(), None, catalog.typical_item.price, known=False)
    return EvidenceItem(item.item_id, item.category, item.price, known=True)


def _match_swaps(missing: tuple[EvidenceItem, ...], unexpected: tuple[EvidenceItem, ...]) -> tuple[TagSwap, ...]:
    """Pair each known unexpected item with the dearest unpaired missing item of its category."""
    free = [m for m in missing if m.known]
    swaps: list[TagSwap] = []
    # Dearest unexpected first so it gets first pick; the pairing is one-to-one.
    for cheap in sorted((u for u in unexpected if u.known), key=lambda u: -u.price):
        candidates = [m for m in free if m.category == cheap.category and m.price > cheap.price]
        if not candidates:
            continue
        dear = max(candidates, key=lambda m: m.price)
        free.remove(dear)
        swaps.append(TagSwap(unexpected=cheap, missing=dear))
    return tuple(swaps)


def _label(item: EvidenceItem, currency: str) -> str:
    """Item label for reasons, e.g. sku-0042 (€129.00), or a note that the id is unknown."""
    if not item.known:
        return f"{item.item_id} (not in the item database)"
    return f"{item.item_id} ({currency}{item.price:,.2f})"


def _swap_reason(swap: TagSwap) -> Reason:
    """Reason text for one probable tag swap."""
    percent = round(100 * swap.discount)
    return Reason(
        "tag_swap",
        f"{swap.unexpected.item_id} left the room but never entered it: possible tag swap for "
        f"{swap.missing.item_id} (same category, {percent}% cheaper)",
    )
