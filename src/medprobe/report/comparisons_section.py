"""The report's paired-comparisons section: the valid paired tests with their multiplicity
adjustment, a note where the bootstrap and DeLong p-values disagree, and the study's t-test on
replicates apart, under its warning."""

from __future__ import annotations

from typing import Any

from medprobe.report.blocks import (
    Block,
    Header,
    Paragraph,
    Part,
    Section,
    cell,
    make_table,
    paragraph_block,
    parts,
    table_block,
)
from medprobe.report.format import fmt3, fmt_ci, fmt_fraction, fmt_p, num
from medprobe.report.load import RunData, as_float
from medprobe.report.stats_sections import resampling_statement


def _test_name(comparison: dict[str, Any]) -> str:
    test = str(comparison.get("test"))
    if test == "delong" and comparison.get("method") == "obuchowski":
        return "DeLong (Obuchowski, clustered)"
    return {"paired_bootstrap": "paired bootstrap", "delong": "DeLong",
            "replicate_t_test": "t-test on replicates"}.get(test, test)


def p_value_disagreements(data: RunData) -> list[str]:
    """Pairs whose paired-bootstrap and DeLong p-values differ noticeably (by more than 0.05, or on
    opposite sides of 0.05) for the same metric, each described with its test-set size."""
    by_pair: dict[tuple, dict[str, Any]] = {}
    for c in data.comparisons:
        key = (c.get("backbone_a"), c.get("layer_a"), c.get("backbone_b"), c.get("layer_b"), c.get("train_fraction"),
               c.get("seed"), c.get("metric"))
        by_pair.setdefault(key, {})[str(c.get("test"))] = as_float(c.get("p_value"))
    n_test = as_float(data.selected()["n_test"].max())
    found = []
    for (a, layer_a, b, layer_b, fraction, seed, metric), tests in by_pair.items():
        boot, delong = tests.get("paired_bootstrap"), tests.get("delong")
        if boot is None or delong is None:
            continue
        if abs(boot - delong) > 0.05 or (boot < 0.05) != (delong < 0.05):
            found.append(f"{a} {layer_a} vs {b} {layer_b} (train fraction {fmt_fraction(fraction)}, seed {seed}"
                         + (f", {metric}" if metric and metric != "auc" else "") + "): "
                         f"paired bootstrap p = {fmt_p(boot)}, DeLong p = {fmt_p(delong)}"
                         + (f", n = {int(n_test)} test samples" if n_test is not None else ""))
    return found


P_VALUE_NOTE = (
    "Why the two p-values differ: both test 'no difference in AUROC' on the same test samples, with different "
    "approximations. The paired bootstrap counts how many of its replicates fall on each side of a zero "
    "difference, and a replicate whose difference is exactly zero counts on both sides; with few test samples "
    "(AUROC takes few distinct values) or two probes that rank the samples almost alike, many replicates tie at "
    "zero and p moves towards 1. DeLong's test divides the observed difference by an estimated standard error "
    "and reads p from a normal distribution, which is only approximate at small n. When they disagree, the test "
    "set cannot settle the comparison; more test samples would.")


def _pair_cells(c: dict[str, Any]) -> list[Any]:
    return [c.get("metric"), num(fmt_fraction(c.get("train_fraction")), c.get("train_fraction")),
            num(str(c.get("seed")), c.get("seed")),
            parts(Part(c.get("backbone_a")), Part(" "), Part(c.get("layer_a"), "code")),
            parts(Part(c.get("backbone_b")), Part(" "), Part(c.get("layer_b"), "code"))]


def comparisons_section(data: RunData) -> Section:
    """The report's paired-comparisons section: each test with its difference, CI and (adjusted) p,
    the replicate t-tests apart; a note when the run had fewer than two backbones."""
    if not data.comparisons:
        return Section("comparisons", "Paired comparisons", "Comparisons",
                       [paragraph_block(Paragraph("none: paired tests need at least two backbones.", "muted"))])
    tests = [c for c in data.comparisons if c.get("test") != "replicate_t_test"]
    t_tests = [c for c in data.comparisons if c.get("test") == "replicate_t_test"]
    adjusted = any("p_holm" in c for c in tests)
    body = []
    for c in tests:
        diff = fmt3(c.get("diff"))
        ci = fmt_ci(c.get("ci_low"), c.get("ci_high"))
        p_value, p_holm, p_bh = (as_float(c.get(k)) for k in ("p_value", "p_holm", "p_bh"))
        decisive = p_holm if adjusted else p_value
        row = [*_pair_cells(c), _test_name(c), num(diff if ci == "n/a" else f"{diff} {ci}", c.get("diff")),
               num(fmt_p(p_value), p_value, "strong" if not adjusted and decisive is not None and decisive < 0.05
                   else "")]
        if adjusted:
            row += [num(fmt_p(p_holm), p_holm, "strong" if p_holm is not None and p_holm < 0.05 else ""),
                    num(fmt_p(p_bh), p_bh), num(str(c["n_family"]) if c.get("n_family") is not None else "—",
                                                c.get("n_family"))]
        row.append(cell(c.get("note"), "muted"))
        body.append(row)
    unit = resampling_statement(data).replace("95 % CI: percentile bootstrap", "Paired bootstrap")
    text = ("Difference A − B on the same test samples; both probes share every bootstrap replicate. "
            f"{unit} DeLong: one AUROC (binary, or each class vs rest); Obuchowski's clustered form when patients "
            "have several images. p-values are two-sided. ")
    if adjusted:
        text += ("Holm and Benjamini–Hochberg (BH) adjust the raw p-values within each family: the per-class rows of "
                 "one pair, train fraction, seed and test (a headline row is a family of one, so adjusted = raw); "
                 "'family' is its size. Bold: Holm-adjusted p < 0.05.")
    else:
        text += "These p-values are not adjusted for multiple comparisons; bold: p < 0.05."
    after = []
    disagreements = p_value_disagreements(data)
    if disagreements:
        after = [Paragraph(P_VALUE_NOTE, "note why"),
                 *(Paragraph(line, "muted pdiff") for line in disagreements)]
    headers = ["metric", Header("train fraction", True), Header("seed", True), "A", "B", "test",
               Header("A − B [95% CI]", True), Header("p-value", True)]
    if adjusted:
        headers += [Header("p (Holm)", True), Header("p (BH)", True), Header("family", True)]
    headers.append("note")
    table = make_table(headers, body, table_id="comparisons", sortable=True)
    blocks = [table_block(table, before=[Paragraph(text, "muted")], after=after)]
    if t_tests:
        blocks.append(replicate_t_test_block(data, t_tests))
    return Section("comparisons", "Paired comparisons", "Comparisons", blocks)


def replicate_t_test_block(data: RunData, rows: list[dict[str, Any]]) -> Block:
    """The study's t-test on bootstrap replicates, apart from the valid tests and under its warning."""
    stats = data.run.get("statistics") if isinstance(data.run.get("statistics"), dict) else {}
    warning = next((str(c["warning"]) for c in rows if c.get("warning")), None) or stats.get("paired_t_test_warning")
    body = [[*_pair_cells(c), num(fmt3(c.get("diff")), c.get("diff")),
             num(f"{as_float(c.get('t')):.2f}" if as_float(c.get("t")) is not None else "n/a", c.get("t")),
             num(str(c.get("n_replicates", "—")), c.get("n_replicates")),
             num(fmt_p(c.get("p_value")), c.get("p_value"))]
            for c in rows]
    headers = ["metric", Header("train fraction", True), Header("seed", True), "A", "B", Header("A − B", True),
               Header("t", True), Header("replicates", True), Header("p (not valid)", True)]
    return table_block(make_table(headers, body, table_id="replicate-t-test", sortable=True),
                       heading="The study's paired t-test on bootstrap replicates (for reproduction only)",
                       before=[Paragraph("Warning: " + (warning or "not a valid test: its statistic grows with the "
                                                                   "number of replicates."), "note warn")])


__all__ = ["P_VALUE_NOTE", "comparisons_section", "p_value_disagreements", "replicate_t_test_block"]
