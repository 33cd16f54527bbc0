// SPDX-License-Identifier: MIT OR Apache-2.0
//
// corral's kernel steering: an SK_REUSEPORT program attached to one
// address's group of per-slot SO_REUSEPORT sockets. For each new connection
// it picks the socket of an eligible slot (ready, not draining, not stalled)
// and hands the connection to it with bpf_sk_select_reuseport; no process
// is on the path. The primary keeps the maps current (kernel/program.rs).
//
// Under least-connections a SOCK_OPS program, attached to the primary's
// cgroup v2, counts each slot's open connections: the SK_REUSEPORT program
// notes the 4-tuple of each connection it steers (`steered`), and when the
// handshake completes the SOCK_OPS program tags the new socket with its
// slot (`tagged`) and counts it open; when the worker closes it (or it is
// closed for the worker, by the kernel at its exit) it counts it closed.
//
// Rebuild with ./build-bpf (clang, BPF target); the object is committed so
// that building corral needs no clang.

#include <linux/bpf.h>
#include <linux/types.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

static long (*bpf_sk_select_reuseport)(struct sk_reuseport_md *md, void *map,
                                       void *key, __u64 flags) =
    (void *)BPF_FUNC_sk_select_reuseport;
static void *(*bpf_map_lookup_elem)(void *map, const void *key) =
    (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_skb_load_bytes)(const void *md, __u32 offset, void *to,
                                  __u32 len) = (void *)BPF_FUNC_skb_load_bytes;
static long (*bpf_map_update_elem)(void *map, const void *key,
                                   const void *value, __u64 flags) =
    (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) =
    (void *)BPF_FUNC_map_delete_elem;
static void *(*bpf_sk_storage_get)(void *map, void *sk, void *value,
                                   __u64 flags) =
    (void *)BPF_FUNC_sk_storage_get;
static long (*bpf_sk_storage_delete)(void *map, void *sk) =
    (void *)BPF_FUNC_sk_storage_delete;
static long (*bpf_sock_ops_cb_flags_set)(struct bpf_sock_ops *skops,
                                         int flags) =
    (void *)BPF_FUNC_sock_ops_cb_flags_set;
static long (*bpf_skb_load_bytes_relative)(const void *md, __u32 offset,
                                           void *to, __u32 len,
                                           __u32 start_header) =
    (void *)BPF_FUNC_skb_load_bytes_relative;

// Slot numbers are 1-based (CORRAL_WORKER_ID) and at most 1024
// (limits::MAX_WORKERS); maps indexed by slot have one entry more.
#define SLOTS 1025
// The size of the sticky table (balance/sticky.rs TABLE_SIZE, a prime).
#define TABLE_SIZE 4099

// Keys of `config`.
#define CONFIG_POLICY 0
#define CONFIG_ELIGIBLE 1

// Values of config[CONFIG_POLICY].
#define POLICY_ROUND_ROBIN 0
#define POLICY_LEAST_CONNECTIONS 1
#define POLICY_STICKY 2

// Keys of `config` (continued).
#define CONFIG_COUNTING 2

// Values of config[CONFIG_COUNTING]: where least-connections' open counts
// come from.
#define COUNTING_REPORTS 0
#define COUNTING_KERNEL 1

// Connections steered but not yet established that `steered` remembers; a
// SYN that never completes is evicted, least recently used first.
#define PENDING_HANDSHAKES 16384

#define AF_INET 2
#define AF_INET6 10
// TCP states (include/net/tcp_states.h).
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_LAST_ACK 9

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

// Each slot's listening socket, at the slot's number.
struct {
  __uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __u32);
} sockets SEC(".maps");

// The policy and how many entries of `eligible` are in use.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 3);
  __type(key, __u32);
  __type(value, __u32);
} config SEC(".maps");

// The eligible slots' numbers, in config[CONFIG_ELIGIBLE] first entries.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __u32);
} eligible SEC(".maps");

// Round-robin's turn: one counter every CPU adds to atomically, so the
// rotation is exact however many connections arrive at once.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u64);
} turn SEC(".maps");

// Least-connections: connections given to each slot, by slot. Counted
// from worker reports, this program writes an entry (one atomic add per
// pick), and the primary when it resets the slot for a new worker; counted
// in the kernel, the SOCK_OPS program adds each connection established.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __s64);
} given SEC(".maps");

// Least-connections: connections of each slot closed, by slot: those its
// workers reported, written by the primary; or counted in the kernel, those
// the SOCK_OPS program saw closed, once per connection counted in `given`,
// so never more than `given`. Open = given - closed.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __s64);
} closed SEC(".maps");

// A connection as both programs see it: addresses in IPv6 form (IPv4 ones
// v4-mapped, as a dual-stack socket shows them), all in network order.
struct tuple {
  __u32 remote[4];
  __u32 local[4];
  __u16 remote_port;
  __u16 local_port;
};

// The slot each connection steered and not yet established went to.
struct {
  __uint(type, BPF_MAP_TYPE_LRU_HASH);
  __uint(max_entries, PENDING_HANDSHAKES);
  __type(key, struct tuple);
  __type(value, __u32);
} steered SEC(".maps");

// The slot an established connection is counted against, on its socket
// until it is counted closed.
struct counted {
  __u32 slot;
};

struct {
  __uint(type, BPF_MAP_TYPE_SK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct counted);
} tagged SEC(".maps");

// Sticky: slot numbers (0: none) indexed by the client address's FNV-1a
// hash modulo TABLE_SIZE; the primary writes it from the eligible slots.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, TABLE_SIZE);
  __type(key, __u32);
  __type(value, __u32);
} sticky_table SEC(".maps");

static __u32 config_value(__u32 key) {
  __u32 *value = bpf_map_lookup_elem(&config, &key);
  return value ? *value : 0;
}

static __u32 eligible_slot(__u32 index) {
  __u32 *slot = bpf_map_lookup_elem(&eligible, &index);
  return slot ? *slot : 0;
}

static __u64 next_turn(void) {
  __u32 zero = 0;
  __u64 *turn_counter = bpf_map_lookup_elem(&turn, &zero);
  return turn_counter ? __sync_fetch_and_add(turn_counter, 1) : 0;
}

static __u32 round_robin(__u32 count) {
  return eligible_slot(next_turn() % count);
}

static __s64 open_connections(__u32 slot) {
  __s64 *given_count = bpf_map_lookup_elem(&given, &slot);
  __s64 *closed_count = bpf_map_lookup_elem(&closed, &slot);
  if (!given_count || !closed_count)
    return 0;
  return *given_count - *closed_count;
}

// The eligible slot with the fewest open connections; among equals, the
// scan starts at the next turn, so equal counts rotate.
static __u32 least_connections(__u32 count, __u32 counting) {
  __u32 start = next_turn() % count;
  __u32 best = 0;
  __s64 fewest = 0;
  for (__u32 step = 0; step < SLOTS && step < count; step++) {
    __u32 index = start + step;
    if (index >= count)
      index -= count;
    __u32 slot = eligible_slot(index);
    __s64 open_count = open_connections(slot);
    if (best == 0 || open_count < fewest) {
      best = slot;
      fewest = open_count;
    }
  }
  if (counting == COUNTING_REPORTS) {
    __s64 *chosen = bpf_map_lookup_elem(&given, &best);
    if (chosen)
      __sync_fetch_and_add(chosen, 1);
  }
  return best;
}

static __u32 fnv1a(const __u8 *bytes, __u32 len) {
  __u32 hash = 2166136261u;
  for (__u32 i = 0; i < 16 && i < len; i++) {
    hash ^= bytes[i];
    hash *= 16777619u;
  }
  return hash;
}

// The client's address hashed, 0 and false when it cannot be read.
static int client_hash(struct sk_reuseport_md *md, __u32 *hash) {
  __u8 address[16] = {};
  if (md->eth_protocol == __builtin_bswap16(ETH_P_IP)) {
    if (bpf_skb_load_bytes_relative(md, 12, address, 4, BPF_HDR_START_NET))
      return 0;
    *hash = fnv1a(address, 4);
    return 1;
  }
  if (md->eth_protocol == __builtin_bswap16(ETH_P_IPV6)) {
    if (bpf_skb_load_bytes_relative(md, 8, address, 16, BPF_HDR_START_NET))
      return 0;
    *hash = fnv1a(address, 16);
    return 1;
  }
  return 0;
}

// The SYN's 4-tuple, 0 when it cannot be read.
static int syn_tuple(struct sk_reuseport_md *md, struct tuple *tuple) {
  if (md->eth_protocol == __builtin_bswap16(ETH_P_IP)) {
    // Source then destination address, at 12 in the IPv4 header.
    if (bpf_skb_load_bytes_relative(md, 12, &tuple->remote[3], 4,
                                    BPF_HDR_START_NET) ||
        bpf_skb_load_bytes_relative(md, 16, &tuple->local[3], 4,
                                    BPF_HDR_START_NET))
      return 0;
    tuple->remote[2] = tuple->local[2] = __builtin_bswap32(0xffff);
  } else if (md->eth_protocol == __builtin_bswap16(ETH_P_IPV6)) {
    if (bpf_skb_load_bytes_relative(md, 8, tuple->remote, 32,
                                    BPF_HDR_START_NET))
      return 0;
  } else {
    return 0;
  }
  // The TCP header's source and destination ports (md->data is there).
  return bpf_skb_load_bytes(md, 0, &tuple->remote_port, 4) == 0;
}

// Notes which slot the connection went to, for the SOCK_OPS program to
// count once the handshake completes.
static void note_steered(struct sk_reuseport_md *md, __u32 slot) {
  struct tuple tuple = {};
  if (syn_tuple(md, &tuple))
    bpf_map_update_elem(&steered, &tuple, &slot, BPF_ANY);
}

static __u32 sticky(struct sk_reuseport_md *md, __u32 count) {
  __u32 hash;
  if (client_hash(md, &hash)) {
    __u32 key = hash % TABLE_SIZE;
    __u32 *slot = bpf_map_lookup_elem(&sticky_table, &key);
    if (slot && *slot)
      return *slot;
  }
  return round_robin(count);
}

SEC("sk_reuseport")
int steer(struct sk_reuseport_md *md) {
  __u32 count = config_value(CONFIG_ELIGIBLE);
  // No eligible slot: the connection is left to the kernel's own choice,
  // the 4-tuple hash over the group's sockets, as under `reuseport`. It
  // waits in that slot's accept queue: the primary keeps every slot's
  // socket open across its workers' replacements and hands it to the next
  // worker, which accepts it. Nothing is refused.
  if (count == 0)
    return SK_PASS;
  __u32 slot;
  switch (config_value(CONFIG_POLICY)) {
  case POLICY_LEAST_CONNECTIONS: {
    __u32 counting = config_value(CONFIG_COUNTING);
    slot = least_connections(count, counting);
    if (counting == COUNTING_KERNEL)
      note_steered(md, slot);
    break;
  }
  case POLICY_STICKY:
    slot = sticky(md, count);
    break;
  default:
    slot = round_robin(count);
  }
  // A slot without a socket in the array (being replaced this instant)
  // also falls back to the hash.
  bpf_sk_select_reuseport(md, &sockets, &slot, 0);
  return SK_PASS;
}

// The established connection's 4-tuple, as syn_tuple reads the SYN's.
static void socket_tuple(struct bpf_sock_ops *skops, struct tuple *tuple) {
  // Every field read first, unconditionally: with reads under branches the
  // compiler shares one offset context pointer, which the verifier refuses.
  __u32 family = skops->family;
  __u32 remote_ip4 = skops->remote_ip4;
  __u32 local_ip4 = skops->local_ip4;
  for (int i = 0; i < 4; i++) {
    tuple->remote[i] = skops->remote_ip6[i];
    tuple->local[i] = skops->local_ip6[i];
  }
  if (family == AF_INET) {
    tuple->remote[0] = tuple->remote[1] = 0;
    tuple->local[0] = tuple->local[1] = 0;
    tuple->remote[2] = tuple->local[2] = __builtin_bswap32(0xffff);
    tuple->remote[3] = remote_ip4;
    tuple->local[3] = local_ip4;
  }
  // remote_port is in network order in the field's upper half; local_port
  // in host order.
  tuple->remote_port = (__u16)(skops->remote_port >> 16);
  tuple->local_port = __builtin_bswap16((__u16)skops->local_port);
}

static void add_one(void *counts, __u32 slot) {
  __s64 *count = bpf_map_lookup_elem(counts, &slot);
  if (count)
    __sync_fetch_and_add(count, 1);
}

// A connection the steering program steered completed its handshake: it
// counts as open in its slot until counted closed, and its state changes
// now call this program.
static void count_established(struct bpf_sock_ops *skops) {
  struct tuple tuple = {};
  socket_tuple(skops, &tuple);
  __u32 *slot = bpf_map_lookup_elem(&steered, &tuple);
  if (!slot)
    return;
  __u32 counted_slot = *slot;
  bpf_map_delete_elem(&steered, &tuple);
  struct bpf_sock *sk = skops->sk;
  if (!sk)
    return;
  struct counted *counted =
      bpf_sk_storage_get(&tagged, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
  if (!counted)
    return;
  counted->slot = counted_slot;
  add_one(&given, counted_slot);
  bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
                                       BPF_SOCK_OPS_STATE_CB_FLAG);
}

// A tagged connection changed state: it is closed for least-connections
// once the worker closed it (FIN_WAIT1: it sent its FIN first; LAST_ACK:
// after the client's) or it is gone (CLOSE, also a reset or the worker's
// exit), whichever comes first; the tag goes, so it counts once.
static void count_closed(struct bpf_sock_ops *skops) {
  __u32 state = skops->args[1];
  if (state != TCP_FIN_WAIT1 && state != TCP_LAST_ACK && state != TCP_CLOSE)
    return;
  struct bpf_sock *sk = skops->sk;
  if (!sk)
    return;
  struct counted *counted = bpf_sk_storage_get(&tagged, sk, 0, 0);
  if (!counted)
    return;
  add_one(&closed, counted->slot);
  // The state callbacks stay on: another program on the cgroup may have
  // asked for them too, and a flag is the socket's, not this program's.
  bpf_sk_storage_delete(&tagged, sk);
}

SEC("sockops")
int count(struct bpf_sock_ops *skops) {
  switch (skops->op) {
  case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
    count_established(skops);
    break;
  case BPF_SOCK_OPS_STATE_CB:
    count_closed(skops);
    break;
  }
  return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
