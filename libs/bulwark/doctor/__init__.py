"""`bulwark doctor`: which part is down, degraded or up, and where an event or a probe stopped.

The core is plain functions returning plain data (dataclasses with `to_dict()`), so the CLI prints them
and a console page can serve the same thing:

- `diagnose(settings)`: every infrastructure part, service and instance, with the evidence;
- `diagnose(settings, probe=True)`: the same plus a canary event through the chain and a canary
  prediction, naming the first hop that did not see it;
- `trace_report(settings, ident)`: for an event id or a trace id, the hops reached and where it stopped.
"""

from bulwark.doctor.checks import diagnose
from bulwark.doctor.model import Diagnosis, HopResult, InstanceState, PartState, ProbeResult, TraceReport
from bulwark.doctor.settings import DoctorSettings
from bulwark.doctor.traces import trace_report

__all__ = ["Diagnosis", "DoctorSettings", "HopResult", "InstanceState", "PartState", "ProbeResult", "TraceReport",
           "diagnose", "trace_report"]
