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
	const uint8_t *p = data;

	if (size < FTS_LMDB_POSTING_HEADER_SIZE)
		return -1;
	hdr_r->last_uid = le32_to_cpu_unaligned(p);
	hdr_r->count = le32_to_cpu_unaligned(p + 4);
	return 0;
}

void fts_lmdb_postings_write_header(buffer_t *buf,
				    const struct fts_lmdb_posting_header *hdr)
{
	uint8_t p[FTS_LMDB_POSTING_HEADER_SIZE];

	cpu32_to_le_unaligned(hdr->last_uid, p);
	cpu32_to_le_unaligned(hdr->count, p + 4);
	if (buf->used < FTS_LMDB_POSTING_HEADER_SIZE)
		buffer_append(buf, p, sizeof(p));
	else
		buffer_write(buf, 0, p, sizeof(p));
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
	if (size < FTS_LMDB_POSTING_HEADER_SIZE) {
		iter->failed = TRUE;
		return;
	}
	iter->p = CONST_PTR_OFFSET(data, FTS_LMDB_POSTING_HEADER_SIZE);
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
