"""`bulwark doctor`: which part is down or degraded, where an event stopped, and a probe through the chain."""

from __future__ import annotations

import sys

import click

from bulwark.cli.output import emit


@click.group(invoke_without_command=True)
@click.option("--probe", is_flag=True, help="Also send a canary event and a canary prediction through the chain.")
@click.option("--interval", type=float, default=0.0, help="Repeat every INTERVAL seconds (0: once).")
@click.option("--no-spans", is_flag=True, help="Skip reading exported spans for error spans (faster).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor(ctx: click.Context, probe: bool, interval: float, no_spans: bool, as_json: bool) -> None:
    """Name each part (broker, Redis, Triton, every service and instance) up, degraded or down, with evidence.

    With --probe, a canary event goes events.raw → anonymizer → trainer and models.trained → quantizer →
    guard → updater, and a canary prediction goes through the front door, guard, cache and Triton; the
    first hop that does not see it is named. Exits 1 when a part is down or the probe stopped.
    """
    if ctx.invoked_subcommand is not None:
        return
    import time

    from bulwark.cli.main import cli_settings
    from bulwark.doctor import DoctorSettings, diagnose
    from bulwark.settings import load_settings

    settings = cli_settings()
    own = load_settings(DoctorSettings)
    while True:
        result = diagnose(settings, doctor=own, probe=probe, spans=not no_spans)
        _print(result, as_json)
        if interval <= 0:
            break
        time.sleep(interval)
    if not result.healthy:
        sys.exit(1)


def _print(result, as_json: bool) -> None:  # noqa: ANN001 - Diagnosis
    if as_json:
        emit(result.to_dict(), as_json=True)
        return
    rows = []
    for p in result.parts:
        rows.append({"part": p.part, "kind": p.kind, "state": p.state,
                     "instances": len(p.instances) if p.kind == "service" else "", "detail": p.detail})
        if len(p.instances) > 1:
            rows += [{"part": f"  {i.instance}", "kind": "instance", "state": i.state, "instances": "",
                      "detail": i.detail} for i in p.instances]
    emit(rows, as_json=False, columns=["part", "kind", "state", "instances", "detail"], colour_column="state")
    if result.probe is not None:
        pr = result.probe
        click.echo("")
        emit([{"hop": h.hop, "seen": {True: "yes", False: "NO", None: "-"}[h.seen],
               "ms": "" if h.ms is None else f"{h.ms:.0f}", "detail": h.detail} for h in pr.hops],
             as_json=False, columns=["hop", "seen", "ms", "detail"])
        click.echo(f"probe {pr.probe_id}: " + ("every hop saw it" if pr.ok else f"stopped at {pr.stopped_at}"))
    verdict = "down: " + ", ".join(result.down) if result.down else "nothing down"
    if result.degraded:
        verdict += "; degraded: " + ", ".join(result.degraded)
    click.echo(f"{verdict} ({result.took_s:.1f}s)")


@doctor.command("trace")
@click.argument("ident")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (includes the spans).")
def doctor_trace(ident: str, as_json: bool) -> None:
    """Where the event (event id) or trace (32-hex trace id) IDENT went, and where it stopped.

    Reads the spans the services exported locally (the otlp_spans topic or <home>/traces) and each
    service's idempotence marks. Exits 1 when it stopped before the end of its journey or was not found.
    """
    from bulwark.cli.main import cli_settings
    from bulwark.doctor import DoctorSettings, trace_report
    from bulwark.settings import load_settings

    report = trace_report(cli_settings(), ident, doctor=load_settings(DoctorSettings))
    if as_json:
        emit(report.to_dict(), as_json=True)
    else:
        emit([{"hop": h.hop, "reached": "yes" if h.seen else "NO", "evidence": h.detail} for h in report.hops],
             as_json=False, columns=["hop", "reached", "evidence"])
        click.echo(report.detail)
    if not report.complete:
        sys.exit(1)


COMMANDS = [doctor]
