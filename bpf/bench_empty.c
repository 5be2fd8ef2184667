// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The floor for `pilus bench datapath`: a classifier that does nothing, run
 * through BPF_PROG_TEST_RUN in the same run as the real programs. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("classifier")
int empty(struct __sk_buff *ctx)
{
	return TC_ACT_OK;
}

char __license[] SEC("license") = "Dual BSD/GPL";
