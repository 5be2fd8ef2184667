/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bob Jenkins' lookup3 hash of three words (the kernel's jhash_3words, as
 * Cilium hashes a tuple for Maglev): cheap, no loops, and it spreads nearby
 * ports over the whole table.
 */
#ifndef PILUS_HASH_H
#define PILUS_HASH_H

#include "common.h"

#define JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 rol32(__u32 word, __u32 shift)
{
	return (word << (shift & 31)) | (word >> ((-shift) & 31));
}

#define __jhash_final(a, b, c)			\
	{					\
		c ^= b; c -= rol32(b, 14);	\
		a ^= c; a -= rol32(c, 11);	\
		b ^= a; b -= rol32(a, 25);	\
		c ^= b; c -= rol32(b, 16);	\
		a ^= c; a -= rol32(c, 4);	\
		b ^= a; b -= rol32(a, 14);	\
		c ^= b; c -= rol32(b, 24);	\
	}

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += JHASH_INITVAL + (3 << 2) + initval;
	b += JHASH_INITVAL + (3 << 2) + initval;
	c += JHASH_INITVAL + (3 << 2) + initval;
	__jhash_final(a, b, c);
	return c;
}

#endif /* PILUS_HASH_H */
