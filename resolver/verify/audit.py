"""One audit: probe every sampled name on every resolver, learn, classify, count."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from resolver.verify.classify import (
    BlockTargets,
    LearnedTargets,
    Observation,
    Response,
    Verdict,
    classify,
    learn_block_targets,
    name_verdict,
)
from resolver.verify.probe import QTYPES, Job, Progress, Settings, Target, run_probes
from resolver.verify.sample import PROBE_NAME, Domain, Sample
from resolver.verify.stats import Group, subtree_verdict


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One query to one resolver, with the control's answer to the same query."""

    domain: Domain
    kind: str  # name | www | random
    qname: str
    qtype: str
    response: Response
    control: Response | None
    verdict: Verdict
    matches_control: bool | None


@dataclass(slots=True)
class DomainResult:
    domain: Domain
    verdict: Verdict  # of the listed name itself
    subtree: Verdict | None  # of its subtree probes; None when none was made
    names: dict[str, Verdict]  # probe kind -> verdict of that name (A and AAAA folded)


@dataclass(slots=True)
class ResolverResult:
    label: str
    probes: list[ProbeResult] = field(default_factory=list)
    domains: list[DomainResult] = field(default_factory=list)
    learned: LearnedTargets = field(default_factory=LearnedTargets)
    overall: Group = field(default_factory=Group)
    categories: dict[str, Group] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Disagreement:
    name: str
    list_name: str
    category: str
    verdicts: dict[str, Verdict]  # resolver label -> verdict

    @property
    def blocked_by(self) -> list[str]:
        return [r for r, v in self.verdicts.items() if v.blocked]

    @property
    def not_blocked_by(self) -> list[str]:
        return [r for r, v in self.verdicts.items() if v is Verdict.NOT_BLOCKED]


@dataclass(slots=True)
class Audit:
    sample: Sample
    resolvers: list[ResolverResult]
    control: str | None
    given: BlockTargets
    settings: Settings
    learn_threshold: int | None
    started: float
    finished: float
    queries: int

    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [*self.sample.warnings, *self.notes]

    def disagreements(self) -> list[Disagreement]:
        """Sampled names that one resolver blocked and another answered unblocked."""
        if len(self.resolvers) < 2:
            return []
        found = []
        for i, domain in enumerate(self.sample.domains):
            verdicts = {r.label: r.domains[i].verdict for r in self.resolvers}
            values = verdicts.values()
            if any(v.blocked for v in values) and Verdict.NOT_BLOCKED in values:
                found.append(Disagreement(domain.name, domain.list_name, domain.category, verdicts))
        return found


def probe_jobs(domains: Sequence[Domain]) -> list[Job]:
    """Every distinct (query name, type) of the sample, in sample order."""
    jobs: dict[Job, None] = {}
    for domain in domains:
        for _, qname in domain.probes:
            for qtype in QTYPES:
                jobs[(qname, qtype)] = None
    return list(jobs)


def run_audit(
    sample: Sample,
    targets: Sequence[Target],
    control: Target | None,
    settings: Settings,
    given: BlockTargets,
    learn_threshold: int | None,
    progress: Progress | None = None,
) -> Audit:
    """Probe, then learn block targets per resolver, then classify and count."""
    started = time.time()
    jobs = probe_jobs(sample.domains)
    wanted = list(dict.fromkeys([*targets, *([control] if control else [])]))
    answers = asyncio.run(run_probes(wanted, jobs, settings, progress))
    control_answers = answers[control] if control is not None else None
    results = [
        evaluate(t.label, sample.domains, answers[t], control_answers, given, learn_threshold)
        for t in targets
    ]
    notes = []
    if control is None:
        for result in results:
            learned = [*result.learned.landing, *result.learned.hosts]
            if learned:
                notes.append(
                    f"{result.label}: learned {', '.join(learned)} as block targets without a "
                    "control resolver to rule out shared hosting; check them, or give --control"
                )
    return Audit(
        notes=notes,
        sample=sample,
        resolvers=results,
        control=control.label if control else None,
        given=given,
        settings=settings,
        learn_threshold=learn_threshold,
        started=started,
        finished=time.time(),
        queries=sum(r.attempts for a in answers.values() for r in a.values()),
    )


def evaluate(
    label: str,
    domains: Sequence[Domain],
    answers: dict[Job, Response],
    control: dict[Job, Response] | None,
    given: BlockTargets,
    learn_threshold: int | None,
) -> ResolverResult:
    """Classify one resolver's answers: learning first (it needs every answer), then one
    verdict per probe, per probed name and per sampled name, counted per category."""
    result = ResolverResult(label)
    if learn_threshold is not None:
        observations = (
            Observation(domain.name, answers[(qname, qtype)], _get(control, (qname, qtype)))
            for domain in domains
            for _, qname in domain.probes
            for qtype in QTYPES
        )
        result.learned = learn_block_targets(observations, given, learn_threshold)
    targets = given.with_learned(result.learned)
    for domain in domains:
        group = result.categories.setdefault(domain.category, Group())
        names: dict[str, Verdict] = {}
        for kind, qname in domain.probes:
            verdicts = []
            control_has_address: bool | None = None if control is None else False
            for qtype in QTYPES:
                response = answers[(qname, qtype)]
                control_response = _get(control, (qname, qtype))
                if control_response is not None and control_response.addresses:
                    control_has_address = True
                verdict, matches = classify(response, control_response, targets)
                verdicts.append(verdict)
                probe = ProbeResult(
                    domain, kind, qname, qtype, response, control_response, verdict, matches
                )
                result.probes.append(probe)
                result.overall.add_probe(verdict, matches)
                group.add_probe(verdict, matches)
            names[kind] = name_verdict(verdicts, control_has_address)
        subtree = subtree_verdict(v for k, v in names.items() if k != PROBE_NAME)
        outcome = DomainResult(domain, names[PROBE_NAME], subtree, names)
        result.domains.append(outcome)
        result.overall.add_name(outcome.verdict, subtree)
        group.add_name(outcome.verdict, subtree)
    result.categories = dict(sorted(result.categories.items()))
    return result


def _get(table: dict[Job, Response] | None, job: Job) -> Response | None:
    return None if table is None else table.get(job)
