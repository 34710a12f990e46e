"""The lab wing: a test bed of network namespaces standing in for guest VMs, an appliance namespace that routes
between them and applies rules, delay and rate limits (`netns`), the userspace delayer for kernels without
netem (`delayer`), and its command line, `vtax lab` (`cli`)."""
