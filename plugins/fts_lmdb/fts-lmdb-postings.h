#ifndef FTS_LMDB_POSTINGS_H
#define FTS_LMDB_POSTINGS_H

/* A posting list: the messages a token occurs in, with the fields it
   occurs in, UIDs ascending. Each message is numpack(UID delta << 1 |
   mask changed), followed by the mask if it differs from the previous
   message's (FTS_LMDB_POSTINGS_FIRST_MASK before the first): most
   tokens occur in the body and headers alike (TEXT), or throughout in
   the same fields, so the mask mostly costs one bit. There is no stored
   header: most tokens occur in one message, where a header would triple
   the size. Appending decodes the list to find its last UID and mask. */

#define FTS_LMDB_POSTINGS_FIRST_MASK 0x03U

struct fts_lmdb_posting_header {
	uint32_t last_uid;
	uint32_t last_mask;
	uint32_t count;
};

/* Reads the whole list: -1 if it is damaged. */
int fts_lmdb_postings_header(const void *data, size_t size,
			     struct fts_lmdb_posting_header *hdr_r);
/* Append one (uid, mask), uid > hdr->last_uid; updates hdr. */
void fts_lmdb_postings_append(buffer_t *buf,
			      struct fts_lmdb_posting_header *hdr,
			      uint32_t uid, uint32_t mask);

struct fts_lmdb_postings_iter {
	const uint8_t *p, *end;
	uint32_t uid, mask;
	bool failed;
};

void fts_lmdb_postings_iter_init(struct fts_lmdb_postings_iter *iter,
				 const void *data, size_t size);
/* FALSE at the end or on damage (iter->failed). */
bool fts_lmdb_postings_iter_next(struct fts_lmdb_postings_iter *iter,
				 uint32_t *uid_r, uint32_t *mask_r);

/* The bytes numpack_encode() writes for n */
size_t fts_lmdb_numpack_size(uint64_t n);

#endif
