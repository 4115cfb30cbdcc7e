/* Posting list encoding. Decoding checks every step, because the bytes
   come from a file that may be damaged: damage is an error, never a
   wrong UID. */

#include "lib.h"
#include "buffer.h"
#include "numpack.h"
#include "fts-lmdb-postings.h"

int fts_lmdb_postings_header(const void *data, size_t size,
			     struct fts_lmdb_posting_header *hdr_r)
{
	struct fts_lmdb_postings_iter iter;
	uint32_t uid, mask;

	i_zero(hdr_r);
	fts_lmdb_postings_iter_init(&iter, data, size);
	while (fts_lmdb_postings_iter_next(&iter, &uid, &mask)) {
		hdr_r->last_uid = uid;
		hdr_r->last_mask = mask;
		hdr_r->count++;
	}
	return iter.failed ? -1 : 0;
}

void fts_lmdb_postings_append(buffer_t *buf,
			      struct fts_lmdb_posting_header *hdr,
			      uint32_t uid, uint32_t mask)
{
	uint32_t prev_mask = hdr->count == 0 ?
		FTS_LMDB_POSTINGS_FIRST_MASK : hdr->last_mask;
	uint64_t delta = uid - hdr->last_uid;

	i_assert(uid > hdr->last_uid);
	numpack_encode(buf, delta << 1 | (mask != prev_mask ? 1 : 0));
	if (mask != prev_mask)
		numpack_encode(buf, mask);
	hdr->last_uid = uid;
	hdr->last_mask = mask;
	hdr->count++;
}

void fts_lmdb_postings_iter_init(struct fts_lmdb_postings_iter *iter,
				 const void *data, size_t size)
{
	i_zero(iter);
	iter->p = data;
	iter->end = CONST_PTR_OFFSET(data, size);
	iter->mask = FTS_LMDB_POSTINGS_FIRST_MASK;
}

bool fts_lmdb_postings_iter_next(struct fts_lmdb_postings_iter *iter,
				 uint32_t *uid_r, uint32_t *mask_r)
{
	uint64_t value, delta;

	if (iter->failed || iter->p == iter->end)
		return FALSE;
	if (numpack_decode(&iter->p, iter->end, &value) < 0 ||
	    ((value & 1) != 0 &&
	     numpack_decode32(&iter->p, iter->end, &iter->mask) < 0)) {
		iter->failed = TRUE;
		return FALSE;
	}
	delta = value >> 1;
	if (delta == 0 || delta > (uint32_t)-1 - iter->uid) {
		iter->failed = TRUE;
		return FALSE;
	}
	iter->uid += delta;
	*uid_r = iter->uid;
	*mask_r = iter->mask;
	return TRUE;
}

size_t fts_lmdb_numpack_size(uint64_t n)
{
	size_t size = 1;

	for (; n >= 0x80; n >>= 7)
		size++;
	return size;
}
