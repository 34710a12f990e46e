"""What vtax ships beside the command (installed as the package `vtax_deploy`): Grafana dashboards and provisioning,
the agent's systemd unit and environment file. `vtax files DIR` writes them out."""
