"""The vSphere wing: the connection to vCenter (`connection`), the inventory and the agents' VMs (`inventory`,
`session`), performance counters (`perf`) and the vtax metrics they feed (`metrics`), the host-counter source
of a run (`source`), the `vsphere:` hook actions (`actions`), and its command-line options and commands
(`cli`). It enters a run only through what `cli.wiring` hands the run loop."""
