"""The vtax controller: spec, plan, engine, run loop, host counters, store, analysis, report, CLI."""
