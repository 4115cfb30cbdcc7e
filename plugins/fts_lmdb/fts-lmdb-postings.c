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
		hdr_r->count++;
	}
	return iter.failed ? -1 : 0;
}

void fts_lmdb_postings_append(buffer_t *buf,
			      struct fts_lmdb_posting_header *hdr,
			      uint32_t uid, uint32_t mask)
{
	i_assert(uid > hdr->last_uid);
	numpack_encode(buf, uid - hdr->last_uid);
	numpack_encode(buf, mask);
	hdr->last_uid = uid;
	hdr->count++;
}

void fts_lmdb_postings_iter_init(struct fts_lmdb_postings_iter *iter,
				 const void *data, size_t size)
{
	i_zero(iter);
	iter->p = data;
	iter->end = CONST_PTR_OFFSET(data, size);
}

bool fts_lmdb_postings_iter_next(struct fts_lmdb_postings_iter *iter,
				 uint32_t *uid_r, uint32_t *mask_r)
{
	uint32_t delta;

	if (iter->failed || iter->p == iter->end)
		return FALSE;
	if (numpack_decode32(&iter->p, iter->end, &delta) < 0 ||
	    numpack_decode32(&iter->p, iter->end, mask_r) < 0 ||
	    delta == 0 || iter->uid > (uint32_t)-1 - delta) {
		iter->failed = TRUE;
		return FALSE;
	}
	iter->uid += delta;
	*uid_r = iter->uid;
	return TRUE;
}
