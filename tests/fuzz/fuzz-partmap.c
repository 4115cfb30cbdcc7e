/* Fuzzes fts_lmdb's part maps against full decoding.

   Input: a mode byte (its bits 4-5 ask for the body to be repeated 1,
   2, 4 or 8 times), a spacing byte, a seed byte for the piece sizes and
   a seed byte for the slices, then the bytes the mode works on:
   0: a base64 body as it is;
   1: a quoted-printable body as it is;
   2: data that is base64-encoded first (line length, CRLF and
      whitespace from the seeds), so that most inputs are valid;
   3: data that is quoted-printable-encoded first;
   4: a part map record as the index stores it;
   5: a message for the CRLF offset scan;
   6: a posting list as the index stores it (fts-lmdb-postings.c, the
      other record the index reads back);
   7: a token block's value (fts-lmdb-block-value.c), under a key whose
      token is empty or the piece seed's byte;
   8: a page of the trigram filter (fts-lmdb-grams-page.c), under the
      key of trigram piece seed, spacing - 1, 0.

   For a body that the scanner accepts (modes 0-3):
   - the full decoding, as Dovecot's BINARY fetch does it, must succeed
     and be as long as the scanner's decoded size;
   - decoding from a checkpoint must give the full decoding's tail from
     the checkpoint's decoded offset (the promise of fts-lmdb-partmap.h);
   - slices read through fts-lmdb-istream.c (what a partial fetch
     sends) must equal the same slices of the full decoding;
   - the record round-trips.
   A record from the input (mode 4) must be rejected or describe parts
   inside the mail with ordered checkpoints, round-trip, and read
   through the slice stream without a crash. The CRLF scan (mode 5) must
   count as IMAP does: a bare LF is two bytes. A posting list (mode 6)
   must give ascending UIDs until it ends or is found damaged, never a
   UID out of order, and the same list when appended again. A block
   (mode 7) must be rejected, or give ascending tokens of 1 to
   FTS_LMDB_TOKEN_MAX bytes without '\n', lists inside the value, and a
   next key above its own; built again from what was read, it must read
   back the same. So must a trigram page (mode 8), whose trigrams must
   ascend from its key to below the next page's, each with a list of
   prefixes ascending. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "str.h"
#include "base64.h"
#include "hex-binary.h"
#include "qp-encoder.h"
#include "istream.h"
#include "istream-base64.h"
#include "istream-qp.h"
#include "../../plugins/fts_lmdb/fts-lmdb-partmap.h"
#include "../../plugins/fts_lmdb/fts-lmdb-postings.h"
#include "../../plugins/fts_lmdb/fts-lmdb-block-value.h"
#include "../../plugins/fts_lmdb/fts-lmdb-grams-page.h"
#include "../../plugins/fts_lmdb/fts-lmdb-istream.h"
#include "fuzz-common.h"

#include <stdio.h>

enum fuzz_partmap_mode {
	FUZZ_PARTMAP_BASE64,
	FUZZ_PARTMAP_QP,
	FUZZ_PARTMAP_BASE64_ENCODED,
	FUZZ_PARTMAP_QP_ENCODED,
	FUZZ_PARTMAP_RECORD,
	FUZZ_PARTMAP_CRLF,
	FUZZ_PARTMAP_POSTINGS,
	FUZZ_PARTMAP_BLOCK,
	FUZZ_PARTMAP_GRAMS_PAGE,

	FUZZ_PARTMAP_MODE_COUNT
};

/* decoding from a checkpoint costs the rest of the body: test a few */
#define FUZZ_MAX_CHECKPOINTS_TESTED 12
#define FUZZ_MAX_SLICES 8
/* a damaged record may claim any size: read only this much of it */
#define FUZZ_MAX_RECORD_MAIL_SIZE (256 * 1024)
#define FUZZ_MAX_RECORD_READ 4096

static const char fuzz_header[] = "Content-Transfer-Encoding: x\r\n\r\n";
static const char fuzz_trailer[] = "\r\n--boundary--\r\n";

int LLVMFuzzerInitialize(int *argc ATTR_UNUSED, char ***argv ATTR_UNUSED)
{
	fuzz_init();
	return 0;
}

/* Decodes as Dovecot's own BINARY fetch does. Returns 0, or -1 if the
   decoder stream fails. */
static int fuzz_decode_full(enum fts_lmdb_partmap_cte cte,
			    const unsigned char *data, size_t size,
			    buffer_t *dest)
{
	struct istream *input, *decoder;
	const unsigned char *p;
	size_t n;
	int ret;

	input = i_stream_create_from_data(data, size);
	decoder = cte == FTS_LMDB_PARTMAP_BASE64 ?
		i_stream_create_base64_decoder(input) :
		i_stream_create_qp_decoder(input);
	i_stream_unref(&input);
	while ((ret = i_stream_read_more(decoder, &p, &n)) > 0) {
		buffer_append(dest, p, n);
		i_stream_skip(decoder, n);
	}
	FUZZ_ASSERT(ret == -1);
	ret = decoder->stream_errno == 0 ? 0 : -1;
	i_stream_unref(&decoder);
	return ret;
}

static void fuzz_check_checkpoints(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
				   uoff_t max_encoded, uoff_t max_decoded)
{
	const struct fts_lmdb_checkpoint *cp;
	unsigned int i, count;

	cp = array_get(cps, &count);
	FUZZ_ASSERT(count > 0 && cp[0].encoded == 0 && cp[0].decoded == 0);
	for (i = 1; i < count; i++) {
		FUZZ_ASSERT(cp[i].encoded > cp[i-1].encoded);
		FUZZ_ASSERT(cp[i].decoded >= cp[i-1].decoded);
		FUZZ_ASSERT(cp[i].encoded <= max_encoded);
		FUZZ_ASSERT(cp[i].decoded <= max_decoded);
	}
}

/* The last checkpoint at or before offset, the slow way. */
static const struct fts_lmdb_checkpoint *
fuzz_checkpoint_linear(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
		       uoff_t offset, bool encoded)
{
	const struct fts_lmdb_checkpoint *cp, *found = NULL;

	array_foreach(cps, cp) {
		if ((encoded ? cp->encoded : cp->decoded) <= offset)
			found = cp;
	}
	return found;
}

static void fuzz_check_find(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			    uoff_t offset)
{
	const struct fts_lmdb_checkpoint *cp, *want;

	/* both as the header says: the last one at or before offset */
	cp = fts_lmdb_checkpoint_find(cps, offset);
	want = fuzz_checkpoint_linear(cps, offset, FALSE);
	FUZZ_ASSERT(cp == want);
	cp = fts_lmdb_checkpoint_find_encoded(cps, offset);
	want = fuzz_checkpoint_linear(cps, offset, TRUE);
	FUZZ_ASSERT(cp == want);
}

/* Reads len bytes at offset from a stream made by
   fts_lmdb_istream_create(). Returns -1 if the stream failed. */
static int fuzz_read_slice(struct istream *input, uoff_t offset, size_t len,
			   buffer_t *dest)
{
	const unsigned char *p;
	size_t n;
	int ret = 1;

	i_stream_seek(input, offset);
	while (dest->used < len &&
	       (ret = i_stream_read_more(input, &p, &n)) > 0) {
		n = I_MIN(n, len - dest->used);
		buffer_append(dest, p, n);
		i_stream_skip(input, n);
	}
	/* the mail stream is blocking: no reason to wait */
	FUZZ_ASSERT(ret != 0);
	return input->stream_errno == 0 ? 0 : -1;
}

static void fuzz_check_slices(const struct fts_lmdb_part_map *part,
			      const buffer_t *mail, const buffer_t *full,
			      uint32_t seed)
{
	struct istream *mail_input, *input;
	buffer_t *slice = t_buffer_create(256);
	uoff_t offset, size;
	size_t len, want_len;
	unsigned int i;

	mail_input = i_stream_create_from_data(mail->data, mail->used);
	input = fts_lmdb_istream_create(mail_input, part);
	i_stream_unref(&mail_input);
	FUZZ_ASSERT(i_stream_get_size(input, TRUE, &size) > 0 &&
		    size == full->used);
	/* small buffers make the stream read, and reposition, often */
	if ((seed & 1) != 0)
		i_stream_set_max_buffer_size(input, 1 + seed % 61);

	for (i = 0; i < FUZZ_MAX_SLICES; i++) {
		uint32_t r = fuzz_next_random(&seed);

		/* at random, just past the end, or all of it */
		offset = full->used == 0 ? 0 : r % (full->used + 2);
		if (i == 0)
			offset = 0;
		len = (r & 0x80000000U) != 0 ? full->used + 1 :
			fuzz_next_random(&seed) % 300;
		buffer_set_used_size(slice, 0);
		if (fuzz_read_slice(input, offset, len, slice) < 0) {
			fuzz_fail("slice %"PRIuUOFF_T"+%zu failed: %s", offset,
				  len, i_stream_get_error(input));
		}
		want_len = offset >= full->used ? 0 :
			I_MIN(len, full->used - offset);
		if (slice->used != want_len ||
		    memcmp(slice->data, CONST_PTR_OFFSET(full->data, offset),
			   want_len) != 0) {
			fuzz_fail("slice %"PRIuUOFF_T"+%zu through the map: %zu "
				  "bytes, differ from the full decoding's %zu",
				  offset, len, slice->used, want_len);
		}
	}
	i_stream_unref(&input);
}

static bool fuzz_checkpoints_equal(const ARRAY_TYPE(fts_lmdb_checkpoint) *c1,
				   const ARRAY_TYPE(fts_lmdb_checkpoint) *c2)
{
	return array_count(c1) == array_count(c2) &&
		(array_count(c1) == 0 ||
		 memcmp(array_front(c1), array_front(c2),
			array_count(c1) * sizeof(*array_front(c1))) == 0);
}

static bool fuzz_maps_equal(const struct fts_lmdb_mail_map *m1,
			    const struct fts_lmdb_mail_map *m2)
{
	const struct fts_lmdb_part_map *p1, *p2;
	unsigned int i, count;

	if (m1->physical_size != m2->physical_size ||
	    strcmp(m1->guid, m2->guid) != 0 ||
	    m1->converts_cleanly != m2->converts_cleanly ||
	    !fuzz_checkpoints_equal(&m1->crlf, &m2->crlf) ||
	    array_count(&m1->converted_pos) != array_count(&m2->converted_pos) ||
	    array_count(&m1->parts) != array_count(&m2->parts))
		return FALSE;
	for (i = 0; i < array_count(&m1->converted_pos); i++) {
		if (*array_idx(&m1->converted_pos, i) !=
		    *array_idx(&m2->converted_pos, i))
			return FALSE;
	}
	p1 = array_get(&m1->parts, &count);
	p2 = array_get(&m2->parts, &count);
	for (i = 0; i < count; i++) {
		if (p1[i].physical_pos != p2[i].physical_pos ||
		    p1[i].header_size != p2[i].header_size ||
		    p1[i].body_size != p2[i].body_size ||
		    p1[i].decoded_size != p2[i].decoded_size ||
		    p1[i].cte != p2[i].cte ||
		    !fuzz_checkpoints_equal(&p1[i].checkpoints,
					    &p2[i].checkpoints))
			return FALSE;
	}
	return TRUE;
}

/* Encodes the map, decodes it back: the same map. */
static void fuzz_check_roundtrip(const struct fts_lmdb_mail_map *map)
{
	struct fts_lmdb_mail_map map2;
	buffer_t *record = t_buffer_create(128);
	const char *error;
	pool_t pool;

	fts_lmdb_mail_map_encode(map, record);
	pool = pool_allocfree_create("fuzz part map");
	if (fts_lmdb_mail_map_decode(pool, record->data, record->used,
				     &map2, &error) < 0)
		fuzz_fail("an encoded map doesn't decode: %s", error);
	FUZZ_ASSERT(fuzz_maps_equal(map, &map2));
	pool_unref(&pool);
}

/* The CRLF checkpoints the scan must give, counted the slow way. */
static void
fuzz_expected_crlf(const unsigned char *data, size_t size, uoff_t spacing,
		   ARRAY_TYPE(fts_lmdb_checkpoint) *cps)
{
	struct fts_lmdb_checkpoint cp;
	uoff_t virtual = 0, last = 0;
	size_t i;

	i_zero(&cp);
	array_push_back(cps, &cp);
	for (i = 0; i < size; i++) {
		virtual++;
		if (data[i] != '\n')
			continue;
		if (i == 0 || data[i-1] != '\r')
			virtual++;
		if (i + 1 - last >= spacing) {
			last = i + 1;
			cp.encoded = i + 1;
			cp.decoded = virtual;
			array_push_back(cps, &cp);
		}
	}
}

static void fuzz_crlf_scan(const unsigned char *data, size_t size,
			   uoff_t spacing, uint32_t piece_seed,
			   ARRAY_TYPE(fts_lmdb_checkpoint) *cps)
{
	struct fts_lmdb_crlf_scan scan;
	size_t pos = 0, piece;

	fts_lmdb_crlf_scan_init(&scan, spacing, cps);
	while (pos < size) {
		piece = piece_seed == 0 ? size - pos :
			1 + fuzz_next_random(&piece_seed) % 97;
		piece = I_MIN(piece, size - pos);
		fts_lmdb_crlf_scan_more(&scan, data + pos, piece);
		pos += piece;
	}
}

static void fuzz_check_crlf(const unsigned char *data, size_t size,
			    uoff_t spacing, uint32_t piece_seed)
{
	ARRAY_TYPE(fts_lmdb_checkpoint) got, want;
	const struct fts_lmdb_checkpoint *g, *w;
	unsigned int i, count;

	t_array_init(&got, 16);
	t_array_init(&want, 16);
	fuzz_crlf_scan(data, size, spacing, piece_seed, &got);
	fuzz_expected_crlf(data, size, spacing, &want);
	g = array_get(&got, &count);
	w = array_front(&want);
	for (i = 0; i < count && i < array_count(&want); i++) {
		if (g[i].encoded != w[i].encoded || g[i].decoded != w[i].decoded)
			fuzz_fail("CRLF checkpoint %u is %"PRIuUOFF_T"->%"PRIuUOFF_T
				  ", counted %"PRIuUOFF_T"->%"PRIuUOFF_T, i,
				  g[i].encoded, g[i].decoded, w[i].encoded,
				  w[i].decoded);
	}
	FUZZ_ASSERT(count == array_count(&want));
	fuzz_check_checkpoints(&got, size, size * 2);
	for (i = 0; i < 8; i++)
		fuzz_check_find(&got, fuzz_next_random(&piece_seed) % (size * 2 + 2));
}

/* Scans a body the way fts-lmdb-partmap-build.c does, in pieces.
   Returns the scanner's answer. */
static int fuzz_part_scan(enum fts_lmdb_partmap_cte cte,
			  const unsigned char *body, size_t size,
			  uoff_t spacing, uint32_t piece_seed,
			  ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			  uoff_t *decoded_size_r)
{
	struct fts_lmdb_part_scan *scan;
	size_t pos = 0, piece;
	int ret = 0;

	scan = fts_lmdb_part_scan_init(cte, spacing, cps);
	while (pos < size) {
		uint32_t r = fuzz_next_random(&piece_seed);

		piece = (r & 3) == 0 ? size - pos : 1 + r % 700;
		piece = I_MIN(piece, size - pos);
		if (fts_lmdb_part_scan_more(scan, body + pos, piece) < 0)
			ret = -1;
		pos += piece;
	}
	if (fts_lmdb_part_scan_finish(&scan, decoded_size_r) < 0)
		ret = -1;
	FUZZ_ASSERT(scan == NULL);
	return ret;
}

static void fuzz_check_part(enum fts_lmdb_partmap_cte cte,
			    const unsigned char *body, size_t size,
			    uoff_t spacing, uint32_t piece_seed,
			    uint32_t slice_seed)
{
	ARRAY_TYPE(fts_lmdb_checkpoint) cps;
	const struct fts_lmdb_checkpoint *cp;
	struct fts_lmdb_mail_map map;
	struct fts_lmdb_part_map *part;
	struct fts_lmdb_crlf_scan crlf;
	buffer_t *full, *tail, *mail;
	uoff_t decoded_size, part_pos = 0;
	unsigned int i, count;
	uint32_t r;
	pool_t pool;

	t_array_init(&cps, 16);
	if (fuzz_part_scan(cte, body, size, spacing, piece_seed, &cps,
			   &decoded_size) < 0) {
		/* no map: fetches take Dovecot's own path */
		return;
	}
	full = t_buffer_create(size + 1);
	if (fuzz_decode_full(cte, body, size, full) < 0)
		fuzz_fail("the scanner accepted a body that Dovecot's decoder "
			  "rejects");
	if (full->used != decoded_size)
		fuzz_fail("decoded size: scanner %"PRIuUOFF_T", full decoding "
			  "%zu", decoded_size, full->used);
	fuzz_check_checkpoints(&cps, size, decoded_size);

	cp = array_get(&cps, &count);
	for (i = 0; i < count && i < FUZZ_MAX_CHECKPOINTS_TESTED; i++) {
		/* the first, the last, and some between */
		unsigned int idx = i == 0 ? 0 : i == 1 ? count - 1 :
			fuzz_next_random(&slice_seed) % count;

		tail = t_buffer_create(size + 1);
		if (fuzz_decode_full(cte, body + cp[idx].encoded,
				     size - cp[idx].encoded, tail) < 0 ||
		    cp[idx].decoded + tail->used != full->used ||
		    memcmp(tail->data, CONST_PTR_OFFSET(full->data,
						       cp[idx].decoded),
			   tail->used) != 0) {
			fuzz_fail("decoding from checkpoint %u (%"PRIuUOFF_T
				  "->%"PRIuUOFF_T") gives %zu bytes, not the "
				  "full decoding's tail", idx, cp[idx].encoded,
				  cp[idx].decoded, tail->used);
		}
	}
	for (i = 0; i < 8; i++) {
		r = fuzz_next_random(&slice_seed);
		fuzz_check_find(&cps, r % (size + decoded_size + 2));
	}

	/* the part inside a message, as the index records it */
	mail = t_buffer_create(size + 64);
	buffer_append(mail, fuzz_header, strlen(fuzz_header));
	buffer_append(mail, body, size);
	buffer_append(mail, fuzz_trailer, strlen(fuzz_trailer));

	pool = pool_allocfree_create("fuzz mail map");
	fts_lmdb_mail_map_init(pool, &map);
	map.physical_size = mail->used;
	map.guid = "fuzz";
	map.converts_cleanly = TRUE;
	array_push_back(&map.converted_pos, &part_pos);
	fts_lmdb_crlf_scan_init(&crlf, spacing, &map.crlf);
	fts_lmdb_crlf_scan_more(&crlf, mail->data, mail->used);
	part = array_append_space(&map.parts);
	part->physical_pos = 0;
	part->header_size = strlen(fuzz_header);
	part->body_size = size;
	part->decoded_size = decoded_size;
	part->cte = cte;
	p_array_init(&part->checkpoints, pool, array_count(&cps));
	array_append_array(&part->checkpoints, &cps);
	fuzz_check_roundtrip(&map);
	fuzz_check_slices(part, mail, full, slice_seed);
	pool_unref(&pool);
}

/* Encodes data as a sender would, with the seed's line length, line
   ends and stray whitespace. */
static void fuzz_encode(enum fts_lmdb_partmap_cte cte, const uint8_t *data,
			size_t size, uint32_t seed, buffer_t *dest)
{
	string_t *qp = t_str_new(size * 3 + 16);
	struct qp_encoder *encoder;
	const buffer_t *b64;
	const unsigned char *p;
	size_t i, len;

	if (cte == FTS_LMDB_PARTMAP_QP) {
		encoder = qp_encoder_init(qp, 20 + seed % 60,
			(seed & 0x100) != 0 ? QP_ENCODER_FLAG_BINARY_DATA : 0);
		qp_encoder_more(encoder, data, size);
		qp_encoder_finish(encoder);
		qp_encoder_deinit(&encoder);
		buffer_append(dest, str_data(qp), str_len(qp));
		return;
	}
	b64 = t_base64_encode((seed & 1) != 0 ? BASE64_ENCODE_FLAG_CRLF : 0,
			      (seed & 2) != 0 ? SIZE_MAX : 1 + (seed >> 2) % 80,
			      data, size);
	p = b64->data;
	len = b64->used;
	for (i = 0; i < len; i++) {
		buffer_append_c(dest, p[i]);
		/* whitespace between quanta or inside one is allowed */
		if ((seed & 0x200) != 0 && fuzz_next_random(&seed) % 53 == 0)
			buffer_append_c(dest, (seed & 1) != 0 ? ' ' : '\t');
	}
	if ((seed & 0x400) != 0)
		buffer_append(dest, "\r\n", 2);
}

/* A damaged record must be rejected or stay inside the mail. */
static void fuzz_check_record(const uint8_t *data, size_t size,
			      uint32_t seed)
{
	struct fts_lmdb_mail_map map;
	const struct fts_lmdb_part_map *part, *found;
	struct istream *mail_input, *input;
	buffer_t *mail, *slice;
	const char *error;
	uoff_t end, part_size;
	unsigned int i, n = 0;
	pool_t pool;

	pool = pool_allocfree_create("fuzz record");
	if (fts_lmdb_mail_map_decode(pool, data, size, &map, &error) < 0) {
		FUZZ_ASSERT(error != NULL);
		pool_unref(&pool);
		return;
	}
	fuzz_check_checkpoints(&map.crlf, map.physical_size,
			       map.physical_size * 2 < map.physical_size ?
			       UOFF_T_MAX : map.physical_size * 2);
	end = 0;
	array_foreach(&map.parts, part) {
		FUZZ_ASSERT(part->physical_pos >= end);
		FUZZ_ASSERT(part->cte == FTS_LMDB_PARTMAP_BASE64 ||
			    part->cte == FTS_LMDB_PARTMAP_QP);
		end = part->physical_pos + part->header_size + part->body_size;
		FUZZ_ASSERT(end >= part->physical_pos && end <= map.physical_size);
		fuzz_check_checkpoints(&part->checkpoints, part->body_size,
				       part->decoded_size);
		found = fts_lmdb_mail_map_find_part(&map, part->physical_pos);
		FUZZ_ASSERT(found != NULL &&
			    found->physical_pos == part->physical_pos);
		for (i = 0; i < 4; i++) {
			fuzz_check_find(&part->checkpoints,
				fuzz_next_random(&seed) % (part->body_size + 2));
		}
	}
	fuzz_check_roundtrip(&map);

	/* the slice stream over a mail the record doesn't describe: errors
	   are fine, crashes and endless loops are not */
	if (map.physical_size <= FUZZ_MAX_RECORD_MAIL_SIZE) {
		mail = t_buffer_create(map.physical_size + 1);
		while (mail->used < map.physical_size) {
			buffer_append_c(mail, "QUJD=\n ="[fuzz_next_random(&seed) % 8]);
		}
		mail_input = i_stream_create_from_data(mail->data, mail->used);
		array_foreach(&map.parts, part) {
			if (n++ == 4)
				break;
			input = fts_lmdb_istream_create(mail_input, part);
			FUZZ_ASSERT(i_stream_get_size(input, TRUE, &part_size) > 0 &&
				    part_size == part->decoded_size);
			for (i = 0; i < 3; i++) {
				slice = t_buffer_create(64);
				(void)fuzz_read_slice(input,
					part->decoded_size == 0 ? 0 :
					fuzz_next_random(&seed) % part->decoded_size,
					1 + fuzz_next_random(&seed) %
					FUZZ_MAX_RECORD_READ, slice);
			}
			i_stream_unref(&input);
		}
		i_stream_unref(&mail_input);
	}
	pool_unref(&pool);
}

/* "damage is an error, never a wrong UID" (fts-lmdb-postings.c) */
static void fuzz_check_postings(const uint8_t *data, size_t size)
{
	struct fts_lmdb_posting_header hdr, hdr2;
	struct fts_lmdb_postings_iter iter, iter2;
	buffer_t *again = t_buffer_create(size + 16);
	uint32_t uid, mask, uid2, mask2, last = 0, count = 0;
	int ret;

	ret = fts_lmdb_postings_header(data, size, &hdr);
	i_zero(&hdr2);
	fts_lmdb_postings_iter_init(&iter, data, size);
	while (fts_lmdb_postings_iter_next(&iter, &uid, &mask)) {
		FUZZ_ASSERT(uid > last);
		last = uid;
		count++;
		fts_lmdb_postings_append(again, &hdr2, uid, mask);
	}
	FUZZ_ASSERT((ret < 0) == iter.failed);
	FUZZ_ASSERT(hdr.count == count && hdr.last_uid == last);
	FUZZ_ASSERT(hdr2.count == count && hdr2.last_uid == last);
	if (iter.failed)
		return;
	/* what was read, written again, reads back the same */
	fts_lmdb_postings_iter_init(&iter, data, size);
	fts_lmdb_postings_iter_init(&iter2, again->data, again->used);
	while (fts_lmdb_postings_iter_next(&iter, &uid, &mask)) {
		FUZZ_ASSERT(fts_lmdb_postings_iter_next(&iter2, &uid2, &mask2));
		FUZZ_ASSERT(uid == uid2 && mask == mask2);
	}
	FUZZ_ASSERT(!fts_lmdb_postings_iter_next(&iter2, &uid2, &mask2));
	FUZZ_ASSERT(!iter2.failed);
}

/* The entries of a block that parsed, or FALSE if they don't add up */
static bool fuzz_block_entries(const struct fts_lmdb_block *block,
			       ARRAY_TYPE(const_string) *tokens,
			       ARRAY_TYPE(const_string) *lists)
{
	struct fts_lmdb_block_iter iter;
	struct fts_lmdb_block_entry entry;
	const char *prev = NULL, *token, *list;
	size_t prev_size = 0;
	int ret;

	fts_lmdb_block_iter_init(&iter, block);
	while ((ret = fts_lmdb_block_iter_next(&iter, &entry)) > 0) {
		FUZZ_ASSERT(entry.size >= 1 && entry.size <= FTS_LMDB_TOKEN_MAX);
		FUZZ_ASSERT(memchr(entry.token, '\n', entry.size) == NULL);
		FUZZ_ASSERT(entry.token >= block->text &&
			    entry.token + entry.size < block->text_end);
		if (entry.postings != NULL) {
			FUZZ_ASSERT(entry.postings >= block->postings &&
				    entry.postings + entry.postings_size <=
				    block->end);
		} else {
			FUZZ_ASSERT(entry.postings_size == 0);
		}
		if (prev != NULL) {
			FUZZ_ASSERT(fts_lmdb_token_cmp(
				(const unsigned char *)prev, prev_size,
				entry.token, entry.size) < 0);
		}
		/* as hex, so that a string keeps any byte */
		token = binary_to_hex(entry.token, entry.size);
		list = entry.postings == NULL ? "-" :
			binary_to_hex(entry.postings, entry.postings_size);
		array_push_back(tokens, &token);
		array_push_back(lists, &list);
		prev = (const char *)entry.token;
		prev_size = entry.size;
	}
	if (ret == 0)
		FUZZ_ASSERT(array_count(tokens) == block->count);
	return ret == 0;
}

static void fuzz_check_block(const uint8_t *data, size_t size, uint8_t low)
{
	struct fts_lmdb_block block, block2;
	struct fts_lmdb_block_builder builder;
	struct fts_lmdb_block_entry entry;
	ARRAY_TYPE(const_string) tokens, lists, tokens2, lists2;
	buffer_t *text = t_buffer_create(8192), *text2;
	buffer_t *value, *bytes = t_buffer_create(256);
	const char *const *token, *const *list;
	/* a mailbox prefix, then the key's token */
	const unsigned char key[] = { 0x01, low };
	size_t key_size = low == 0 ? 1 : 2;
	unsigned int i;

	if (fts_lmdb_block_parse(1, key, key_size, data, size, text,
				 &block) < 0)
		return;
	FUZZ_ASSERT(block.low == key + 1 && block.low_size == key_size - 1);
	FUZZ_ASSERT(block.postings >= data && block.end == data + size);
	FUZZ_ASSERT(block.text_end - block.text <=
		    (ptrdiff_t)(block.count * (FTS_LMDB_TOKEN_MAX + 1)));
	if (!block.last) {
		FUZZ_ASSERT(block.next >= data &&
			    block.next + block.next_size <= data + size);
		FUZZ_ASSERT(fts_lmdb_token_cmp(block.next, block.next_size,
					       block.low, block.low_size) > 0);
	}
	t_array_init(&tokens, 16);
	t_array_init(&lists, 16);
	if (!fuzz_block_entries(&block, &tokens, &lists))
		return;

	/* built again from what was read */
	fts_lmdb_block_builder_init(&builder);
	fts_lmdb_block_builder_start(&builder);
	for (i = 0; i < array_count(&tokens); i++) {
		token = array_idx(&tokens, i);
		list = array_idx(&lists, i);
		i_zero(&entry);
		buffer_set_used_size(bytes, 0);
		hex_to_binary(*token, bytes);
		entry.token = p_memdup(unsafe_data_stack_pool, bytes->data,
				       bytes->used);
		entry.size = bytes->used;
		if (strcmp(*list, "-") != 0) {
			buffer_set_used_size(bytes, 0);
			hex_to_binary(*list, bytes);
			entry.postings = p_memdup(unsafe_data_stack_pool,
						  bytes->data, bytes->used);
			entry.postings_size = bytes->used;
		}
		fts_lmdb_block_builder_add(&builder, &entry);
	}
	value = t_buffer_create(size + 16);
	fts_lmdb_block_builder_finish(&builder, block.next, block.next_size,
				      block.last, value);
	text2 = t_buffer_create(8192);
	FUZZ_ASSERT(fts_lmdb_block_parse(1, key, key_size, value->data,
					 value->used, text2, &block2) == 0);
	FUZZ_ASSERT(block2.last == block.last &&
		    block2.next_size == block.next_size &&
		    (block.last || memcmp(block2.next, block.next,
					  block.next_size) == 0));
	FUZZ_ASSERT(text2->used == text->used &&
		    memcmp(text2->data, text->data, text->used) == 0);
	t_array_init(&tokens2, 16);
	t_array_init(&lists2, 16);
	FUZZ_ASSERT(fuzz_block_entries(&block2, &tokens2, &lists2));
	FUZZ_ASSERT(array_count(&tokens2) == array_count(&tokens));
	for (i = 0; i < array_count(&tokens); i++) {
		FUZZ_ASSERT(strcmp(array_idx_elem(&tokens, i),
				   array_idx_elem(&tokens2, i)) == 0);
		FUZZ_ASSERT(strcmp(array_idx_elem(&lists, i),
				   array_idx_elem(&lists2, i)) == 0);
	}
}

/* The trigrams of a page that parsed, with their prefixes (a list's
   end marked by FTS_LMDB_PREFIX_MAX + 1), or FALSE if they don't add
   up */
static bool fuzz_grams_entries(const struct fts_lmdb_grams_page *page,
			       ARRAY_TYPE(uint32_t) *grams,
			       ARRAY_TYPE(uint32_t) *prefixes)
{
	struct fts_lmdb_grams_page_iter iter;
	ARRAY_TYPE(fts_lmdb_prefix) list;
	const unsigned char *list_data;
	const uint32_t *p;
	const uint32_t end_mark = FTS_LMDB_PREFIX_MAX + 1;
	size_t list_size;
	uint32_t gram;
	unsigned int i, count;
	int ret;

	t_array_init(&list, 16);
	fts_lmdb_grams_page_iter_init(&iter, page);
	while ((ret = fts_lmdb_grams_page_next(&iter, &gram, &list_data,
					       &list_size)) > 0) {
		FUZZ_ASSERT(gram >= page->low && gram <= FTS_LMDB_GRAM_MAX);
		FUZZ_ASSERT(page->last || gram < page->next);
		FUZZ_ASSERT(array_count(grams) == 0 ||
			    gram > *array_idx(grams, array_count(grams) - 1));
		FUZZ_ASSERT(list_data >= page->p &&
			    list_data + list_size <= page->end);
		if (fts_lmdb_grams_list_decode(list_data, list_size,
					       &list) < 0)
			return FALSE;
		p = array_get(&list, &count);
		FUZZ_ASSERT(count > 0);
		for (i = 0; i < count; i++) {
			FUZZ_ASSERT(p[i] <= FTS_LMDB_PREFIX_MAX);
			FUZZ_ASSERT(i == 0 || p[i] > p[i - 1]);
		}
		array_push_back(grams, &gram);
		array_append_array(prefixes, &list);
		array_push_back(prefixes, &end_mark);
	}
	return ret == 0;
}

static void fuzz_check_grams_page(const uint8_t *data, size_t size,
				  const unsigned char low[3])
{
	struct fts_lmdb_grams_page page, page2;
	struct fts_lmdb_grams_page_builder builder;
	ARRAY_TYPE(uint32_t) grams, prefixes, grams2, prefixes2;
	ARRAY_TYPE(fts_lmdb_prefix) scratch, merged;
	ARRAY_TYPE(uint64_t) pairs;
	buffer_t *list, *value;
	const uint32_t *p;
	uint64_t pair;
	unsigned int i, j, count;

	if (fts_lmdb_grams_page_parse(low, data, size, &page) < 0)
		return;
	FUZZ_ASSERT(page.low == fts_lmdb_gram_at(low));
	FUZZ_ASSERT(page.last || page.next > page.low);
	FUZZ_ASSERT(page.p >= data && page.end == data + size);
	t_array_init(&grams, 16);
	t_array_init(&prefixes, 64);
	if (!fuzz_grams_entries(&page, &grams, &prefixes))
		return;

	/* built again from what was read, each list by a merge into
	   none */
	t_array_init(&scratch, 16);
	t_array_init(&merged, 16);
	t_array_init(&pairs, 16);
	list = t_buffer_create(64);
	value = t_buffer_create(size + 16);
	fts_lmdb_grams_page_builder_init(&builder);
	fts_lmdb_grams_page_builder_start(&builder, page.low);
	p = array_get(&prefixes, &count);
	for (i = 0, j = 0; i < array_count(&grams); i++, j++) {
		array_clear(&pairs);
		for (; p[j] <= FTS_LMDB_PREFIX_MAX; j++) {
			pair = ((uint64_t)*array_idx(&grams, i) << 24) | p[j];
			array_push_back(&pairs, &pair);
		}
		buffer_set_used_size(list, 0);
		FUZZ_ASSERT(fts_lmdb_grams_list_merge(NULL, 0,
			array_front(&pairs), array_count(&pairs),
			&scratch, &merged, list) == 0);
		fts_lmdb_grams_page_builder_add(&builder,
			*array_idx(&grams, i), list->data, list->used);
	}
	FUZZ_ASSERT(j == count);
	fts_lmdb_grams_page_builder_finish(&builder, page.next, page.last,
					   value);
	FUZZ_ASSERT(fts_lmdb_grams_page_parse(low, value->data, value->used,
					      &page2) == 0);
	FUZZ_ASSERT(page2.last == page.last &&
		    (page.last || page2.next == page.next));
	t_array_init(&grams2, 16);
	t_array_init(&prefixes2, 64);
	FUZZ_ASSERT(fuzz_grams_entries(&page2, &grams2, &prefixes2));
	FUZZ_ASSERT(array_cmp(&grams, &grams2));
	FUZZ_ASSERT(array_cmp(&prefixes, &prefixes2));
}

static void fuzz_partmap(const uint8_t *data, size_t size)
{
	struct fuzz_reader reader;
	enum fuzz_partmap_mode mode;
	enum fts_lmdb_partmap_cte cte;
	const uint8_t *body;
	buffer_t *encoded, *repeated;
	uint32_t piece_seed, slice_seed;
	unsigned int i, repeat;
	uint8_t mode_byte;
	unsigned char low[3];
	uoff_t spacing;
	size_t body_size;

	fuzz_reader_init(&reader, data, size);
	mode_byte = fuzz_u8(&reader);
	mode = (mode_byte & 0x0f) % FUZZ_PARTMAP_MODE_COUNT;
	/* repeating the body reaches sizes that -max_len doesn't: decoded
	   output beyond the scanner's 8 KiB buffer, quoted-printable lines
	   longer than its 8 KiB chunks */
	repeat = 1U << ((mode_byte >> 4) & 3);
	/* far closer than the 64 KiB of real maps, so that small inputs
	   have many checkpoints */
	spacing = 1 + fuzz_u8(&reader);
	piece_seed = fuzz_u8(&reader);
	slice_seed = fuzz_u8(&reader) * 0x01000193U + 1;
	body = data + I_MIN(size, reader.pos);
	body_size = size - I_MIN(size, reader.pos);
	if (repeat > 1 && mode != FUZZ_PARTMAP_RECORD &&
	    mode != FUZZ_PARTMAP_POSTINGS && mode != FUZZ_PARTMAP_BLOCK &&
	    mode != FUZZ_PARTMAP_GRAMS_PAGE) {
		repeated = t_buffer_create(body_size * repeat + 1);
		for (i = 0; i < repeat; i++)
			buffer_append(repeated, body, body_size);
		body = repeated->data;
		body_size = repeated->used;
	}

	switch (mode) {
	case FUZZ_PARTMAP_BASE64:
	case FUZZ_PARTMAP_QP:
		cte = mode == FUZZ_PARTMAP_BASE64 ? FTS_LMDB_PARTMAP_BASE64 :
			FTS_LMDB_PARTMAP_QP;
		fuzz_check_part(cte, body, body_size, spacing, piece_seed,
				slice_seed);
		break;
	case FUZZ_PARTMAP_BASE64_ENCODED:
	case FUZZ_PARTMAP_QP_ENCODED:
		cte = mode == FUZZ_PARTMAP_BASE64_ENCODED ?
			FTS_LMDB_PARTMAP_BASE64 : FTS_LMDB_PARTMAP_QP;
		encoded = t_buffer_create(body_size * 2 + 16);
		fuzz_encode(cte, body, body_size, slice_seed, encoded);
		fuzz_check_part(cte, encoded->data, encoded->used, spacing,
				piece_seed, slice_seed);
		break;
	case FUZZ_PARTMAP_RECORD:
		fuzz_check_record(body, body_size, slice_seed);
		break;
	case FUZZ_PARTMAP_CRLF:
		fuzz_check_crlf(body, body_size, spacing, piece_seed);
		break;
	case FUZZ_PARTMAP_POSTINGS:
		fuzz_check_postings(body, body_size);
		break;
	case FUZZ_PARTMAP_BLOCK:
		fuzz_check_block(body, body_size, piece_seed);
		break;
	case FUZZ_PARTMAP_GRAMS_PAGE:
		low[0] = piece_seed;
		low[1] = spacing - 1;
		low[2] = 0;
		fuzz_check_grams_page(body, body_size, low);
		break;
	case FUZZ_PARTMAP_MODE_COUNT:
		i_unreached();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	T_BEGIN {
		fuzz_partmap(data, size);
	} T_END;
	return 0;
}
