// SPDX-License-Identifier: MIT OR Apache-2.0
//
// corral's kernel steering: an SK_REUSEPORT program attached to one
// address's group of per-slot SO_REUSEPORT sockets. For each new connection
// it picks the socket of an eligible slot (ready, not draining, not stalled)
// and hands the connection to it with bpf_sk_select_reuseport; no process
// is on the path. The primary keeps the maps current (kernel/maps.rs).
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
  __uint(max_entries, 2);
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

// Least-connections: connections given to each slot, by slot; only the
// program writes an entry (one atomic add per pick), except when the
// primary resets the slot for a new worker.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __s64);
} given SEC(".maps");

// Least-connections: connections each slot's workers reported closed, by
// slot; only the primary writes it. Open = given - closed.
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SLOTS);
  __type(key, __u32);
  __type(value, __s64);
} closed SEC(".maps");

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
static __u32 least_connections(__u32 count) {
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
  __s64 *chosen = bpf_map_lookup_elem(&given, &best);
  if (chosen)
    __sync_fetch_and_add(chosen, 1);
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
  case POLICY_LEAST_CONNECTIONS:
    slot = least_connections(count);
    break;
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

char LICENSE[] SEC("license") = "Dual MIT/GPL";
