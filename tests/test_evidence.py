"""Hard evidence rules and the reasons a floor manager reads."""

import random
from collections import Counter
from collections.abc import Sequence

from fitting_room.catalog import Catalog, normalize_item_id
from fitting_room.evidence import (
    Evidence,
    EvidenceItem,
    Reason,
    _match_swaps,
    collect_evidence,
    evidence_reasons,
    sessions_with_evidence,
)

CATALOG = Catalog.from_mapping(
    {
        "Dress-XL": {"category": "Dresses", "price": 129.0},
        "Dress-S": {"category": "Dresses", "price": 38.7},
        "Tee/1": {"category": "Tops", "price": 35.5},
        "Tee/2": {"category": "Tops", "price": 12.0},
        "Cap": {"category": "Acc.", "price": 9.99},
    }
)


def test_clean_session_has_no_evidence() -> None:
    evidence = collect_evidence(["Dress-XL", "tee/1"], [" dress-xl", "TEE/1"], CATALOG)
    assert not evidence.has_evidence
    assert evidence.missing_value == 0
    assert evidence_reasons(evidence) == []


def test_missing_items_with_value_and_reason() -> None:
    evidence = collect_evidence(["Dress-XL", "Tee/1", "Cap"], ["cap"], CATALOG)
    assert [m.item_id for m in evidence.missing] == ["Dress-XL", "Tee/1"]
    assert evidence.missing_value == 129.0 + 35.5
    assert evidence.unexpected == () and evidence.swaps == ()
    assert evidence_reasons(evidence) == [
        Reason("missing_items", "2 items not scanned out: Dress-XL (€129.00), Tee/1 (€35.50)")
    ]


def test_duplicates_are_a_multiset() -> None:
    evidence = collect_evidence(["Cap", "cap", "Cap"], ["CAP"], CATALOG)
    assert [m.item_id for m in evidence.missing] == ["Cap", "Cap"]


def test_tag_swap_same_category_cheaper() -> None:
    evidence = collect_evidence(["Dress-XL", "Cap"], ["Dress-S", "Cap"], CATALOG)
    assert len(evidence.swaps) == 1
    swap = evidence.swaps[0]
    assert (swap.unexpected.item_id, swap.missing.item_id) == ("Dress-S", "Dress-XL")
    assert round(swap.discount, 2) == 0.7
    assert evidence.swap_value == 129.0 - 38.7
    # The swap explains both the missing and the unexpected item: one reason, not three.
    assert evidence_reasons(evidence) == [
        Reason(
            "tag_swap",
            "Dress-S left the room but never entered it: possible tag swap for Dress-XL (same category, 70% cheaper)",
        )
    ]


def test_no_swap_for_other_category_or_dearer_item() -> None:
    other_category = collect_evidence(["Dress-XL"], ["Tee/2"], CATALOG)
    dearer = collect_evidence(["Dress-S"], ["Dress-XL"], CATALOG)
    for evidence in (other_category, dearer):
        assert evidence.swaps == ()
        assert [r.code for r in evidence_reasons(evidence)] == ["missing_items", "unexpected_items"]
    assert evidence_reasons(dearer)[1].message == ("1 item scanned out that was never scanned in: Dress-XL (€129.00)")


def test_unknown_ids_are_valued_at_the_typical_price_and_named() -> None:
    evidence = collect_evidence(["Cap", " mystery-9 "], ["Cap", "ghost"], CATALOG)
    assert evidence.missing[0].item_id == "mystery-9" and not evidence.missing[0].known
    assert evidence.missing_value == CATALOG.typical_item.price
    assert evidence.swaps == ()
    messages = [r.message for r in evidence_reasons(evidence)]
    assert messages == [
        "1 item not scanned out: mystery-9 (not in the item database)",
        "1 item scanned out that was never scanned in: ghost (not in the item database)",
    ]


def test_swap_pairs_are_one_to_one() -> None:
    evidence = collect_evidence(["Dress-XL", "Tee/1"], ["Dress-S", "Tee/2", "Cap"], CATALOG)
    pairs = {(s.unexpected.item_id, s.missing.item_id) for s in evidence.swaps}
    assert pairs == {("Dress-S", "Dress-XL"), ("Tee/2", "Tee/1")}
    assert [r.code for r in evidence_reasons(evidence)] == ["tag_swap", "tag_swap", "unexpected_items"]


CATALOG_IDS = [item.item_id for item in CATALOG]


def _random_scans(rng: random.Random) -> tuple[list[str], list[str]]:
    """Entry and exit scans with duplicates, unknown ids, spelling variants, drops, additions and swaps."""
    pool = [*CATALOG_IDS, "ghost-1", "Ghost-1 ", "zz"]
    entry = [rng.choice(pool) for _ in range(rng.randint(0, 6))]
    exit_ = [rng.choice((raw, f"  {raw.upper()} ", raw.lower())) for raw in entry]
    rng.shuffle(exit_)
    if exit_ and rng.random() < 0.3:
        del exit_[rng.randrange(len(exit_))]
    if rng.random() < 0.2:
        exit_.append(rng.choice(pool))
    if exit_ and rng.random() < 0.2:
        exit_[rng.randrange(len(exit_))] = rng.choice(pool)
    return entry, exit_


def test_sessions_with_evidence_matches_collect_evidence() -> None:
    rng = random.Random(3)
    pairs = [_random_scans(rng) for _ in range(3000)]
    pairs += [
        ([], []),
        ([], ["Cap"]),
        (["Cap"], []),
        (["Cap", "cap"], ["CAP ", " cap"]),
        (["Cap", "Cap"], ["Cap", "Tee/1"]),
    ]
    entries, exits = [e for e, _ in pairs], [x for _, x in pairs]
    mask = sessions_with_evidence(entries, exits)
    expected = [collect_evidence(e, x, CATALOG).has_evidence for e, x in pairs]
    assert mask.tolist() == expected
    assert 0 < sum(expected) < len(pairs)  # both kinds are exercised


def _reference_evidence(entry: Sequence[str], exit_: Sequence[str], catalog: Catalog) -> Evidence:
    """collect_evidence by its definition: a multiset difference each way, every scan looked up on its own."""

    def leftover(left: Sequence[str], right: Sequence[str]) -> list[str]:
        available = Counter(normalize_item_id(raw) for raw in right)
        out = []
        for raw in left:
            if available[normalize_item_id(raw)] > 0:
                available[normalize_item_id(raw)] -= 1
            else:
                out.append(raw)
        return out

    def describe(raw: str) -> EvidenceItem:
        item = catalog.lookup(raw)
        if item is None:
            return EvidenceItem(raw.strip(), None, catalog.typical_item.price, known=False)
        return EvidenceItem(item.item_id, item.category, item.price, known=True)

    missing = tuple(describe(raw) for raw in leftover(entry, exit_))
    unexpected = tuple(describe(raw) for raw in leftover(exit_, entry))
    return Evidence(missing, unexpected, _match_swaps(missing, unexpected), tuple(describe(r).price for r in entry))


def test_collect_evidence_equals_its_definition() -> None:
    # collect_evidence normalises each id once and looks each distinct id up once; the result must not change.
    rng = random.Random(5)
    pairs = [_random_scans(rng) for _ in range(3000)]
    pairs += [(["Dress-XL", "dress-xl "], ["Dress-S"]), (["Cap", "Cap"], ["Cap", "Cap"]), ([], [])]
    for entry, exit_ in pairs:
        evidence = collect_evidence(entry, exit_, CATALOG)
        expected = _reference_evidence(entry, exit_, CATALOG)
        assert evidence == expected, (entry, exit_)
        assert evidence_reasons(evidence) == evidence_reasons(expected), (entry, exit_)


def test_a_swap_explains_one_of_two_equal_missing_items() -> None:
    # Two tags of one SKU missing, one probably swapped: the other is still reported missing.
    evidence = collect_evidence(["Dress-XL", " dress-xl"], ["Dress-S"], CATALOG)
    assert [m.item_id for m in evidence.missing] == ["Dress-XL", "Dress-XL"]
    assert evidence.missing[0] is not evidence.missing[1]
    assert [r.code for r in evidence_reasons(evidence)] == ["tag_swap", "missing_items"]
    assert evidence_reasons(evidence)[1].message == "1 item not scanned out: Dress-XL (€129.00)"


def test_sessions_with_evidence_of_no_sessions() -> None:
    assert sessions_with_evidence([], []).tolist() == []
