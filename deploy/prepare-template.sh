#!/bin/sh
# Turn a Debian/Ubuntu VM into a vtax agent template (docs/how-to/across-vms.md). Run it inside the VM, as
# root, from a checkout of vtax:
#   sh deploy/prepare-template.sh [AGENT_DIR]
# AGENT_DIR is the agent side of `vtax certs init` (DIR/agent), for a secure deployment; without it the agents
# use a password-only broker, whose password you then add to /etc/vtax/agent.env yourself.
# Every clone `vtax deploy` makes from this VM starts its agent with the name, zone, broker and allowlist that
# deploy wrote into its guestinfo (or, with `vtax deploy --cloud-init`, that cloud-init wrote into
# /etc/vtax/instance.yaml): the template needs no per-VM edit. Shut the VM down afterwards and turn it into a
# template (or take a snapshot, for --linked-clone).
set -eu
src="$(cd "$(dirname "$0")/.." && pwd)"
agent_dir="${1:-}"

apt-get update
apt-get install -y iperf3 python3-venv open-vm-tools   # open-vm-tools: vmtoolsd reads the guestinfo
python3 -m venv /opt/vtax
/opt/vtax/bin/pip install "$src"
ln -sf /opt/vtax/bin/vtax /usr/local/bin/vtax

id vtax >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin vtax
install -m 644 "$src/deploy/vtax-agent.service" /etc/systemd/system/
install -d -m 755 /etc/vtax
: > /etc/vtax/agent.env
if [ -n "$agent_dir" ]; then
    rm -rf /etc/vtax/broker && cp -r "$agent_dir" /etc/vtax/broker
    chown -R root:vtax /etc/vtax/broker && chmod -R g+rX,o-rwx /etc/vtax/broker
    # the user, password and certificates are the same for every agent; guestinfo names the broker itself
    grep -E '^VTAX_BROKER_(USERNAME|PASSWORD|PREFIX)=' /etc/vtax/broker/broker.env >> /etc/vtax/agent.env
    echo "VTAX_BROKER_CERTS=/etc/vtax/broker" >> /etc/vtax/agent.env
fi
chown root:vtax /etc/vtax/agent.env && chmod 640 /etc/vtax/agent.env

# a clone must not keep the template's identity: a fresh machine-id on its first boot
truncate -s 0 /etc/machine-id
rm -f /var/lib/dbus/machine-id
systemctl daemon-reload
systemctl enable vtax-agent
echo "template ready: shut down, then convert to a template (or snapshot it for linked clones)"
