"""A Prefect automation that acts on vt's live states (`vt run CONFIG --reference STUDY`).

While seeds train, vt sends an event for each state a seed enters, decoded under the reference
study's model (flows/live.py):

    vt.seed.entered-state    every change of a seed's most probable state
    vt.seed.entered-detour   the state entered is one the reference found to delay convergence
    vt.seed.predicted-late   the reference seeds that entered that state converged, in the median,
                             after the last step this run trains

Each event's resource is the seed (``vt.study.NAME.seed.N``, labels ``vt.study``, ``vt.seed``,
``vt.step``, ``vt.state``); the study (role ``study``) and the flow run training it (role
``flow-run``) are related resources. This script creates one automation: when a seed of the named
study enters a detour state, cancel the flow run that trains it. For a deployment's run (a worker
started it: deployments/prefect.yaml) the worker stops the run's process with SIGTERM, and its
seeds stop at their next checkpoint and resume with `vt run` later, as after Ctrl-C; a `vt run` in
a terminal is not a worker's and is not stopped this way.

    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python deployments/live_automation.py sparse_parity      # the study's name (config `name`)
    python deployments/live_automation.py sparse_parity --print   # the automation as JSON only

To be told instead of stopping, replace the action by ``SendNotification(block_document_id=...,
subject=..., body=...)`` naming a notification block (Slack, e-mail) made in the Prefect UI.
"""

from __future__ import annotations

import argparse

from prefect.automations import Automation
from prefect.events.actions import CancelFlowRun
from prefect.events.schemas.automations import EventTrigger, Posture


def cancel_on_detour(study_name: str) -> Automation:
    return Automation(
        name=f"vt {study_name}: cancel the run when a seed enters a detour state",
        description="vt live states (vt run --reference): a seed entered a state that delayed convergence "
                    "in the reference study",
        trigger=EventTrigger(expect={"vt.seed.entered-detour"},
                             match={"prefect.resource.id": f"vt.study.{study_name}.seed.*"},
                             posture=Posture.Reactive, threshold=1),
        actions=[CancelFlowRun(source="inferred")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_name", help="the study's name (`name` in its config)")
    parser.add_argument("--print", action="store_true", help="print the automation as JSON; create nothing")
    args = parser.parse_args()
    automation = cancel_on_detour(args.study_name)
    if args.print:
        print(automation.model_dump_json(indent=2, exclude={"id"}))
        return
    made = automation.create()
    print(f"created automation {made.id}: {made.name}")


if __name__ == "__main__":
    main()
