/* Part maps: scanning encoded bodies for checkpoints, and the record
   format. A record is small next to the mail it maps (a checkpoint per
   64 KiB, stored as numpacked deltas), and a damaged one is rejected
   whole, never half-used. */

#include "lib.h"
#include "array.h"
#include "buffer.h"
#include "numpack.h"
#include "base64.h"
#include "qp-decoder.h"
#include "fts-lmdb-partmap.h"

#define FTS_LMDB_PARTMAP_VERSION 1
/* a scanner decodes into a fixed buffer of this size and only counts */
#define FTS_LMDB_SCAN_BUF_SIZE 8192

struct fts_lmdb_part_scan {
	enum fts_lmdb_partmap_cte cte;
	uoff_t spacing;
	ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints;

	uoff_t encoded, decoded, last_checkpoint;
	bool invalid;

	/* base64: alphabet characters seen; checkpoints stop at the first
	   character that isn't one of them or whitespace */
	struct base64_decoder b64;
	uoff_t b64_chars, b64_next_decoded;
	bool b64_no_more_checkpoints;

	struct qp_decoder *qp;
	buffer_t *qp_out;
};

static void fts_lmdb_checkpoint_add(ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
				    uoff_t encoded, uoff_t decoded)
{
	struct fts_lmdb_checkpoint *cp = array_append_space(cps);

	cp->encoded = encoded;
	cp->decoded = decoded;
}

struct fts_lmdb_part_scan *
fts_lmdb_part_scan_init(enum fts_lmdb_partmap_cte cte, uoff_t spacing,
			ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints)
{
	struct fts_lmdb_part_scan *scan;

	scan = i_new(struct fts_lmdb_part_scan, 1);
	scan->cte = cte;
	scan->spacing = spacing;
	scan->checkpoints = checkpoints;
	array_clear(checkpoints);
	fts_lmdb_checkpoint_add(checkpoints, 0, 0);
	if (cte == FTS_LMDB_PARTMAP_BASE64) {
		/* the flags istream-base64-decoder uses */
		base64_decode_init(&scan->b64, &base64_scheme, 0);
		scan->b64_next_decoded = spacing;
	} else {
		scan->qp_out = buffer_create_dynamic(default_pool,
						     FTS_LMDB_SCAN_BUF_SIZE);
		scan->qp = qp_decoder_init(scan->qp_out);
	}
	return scan;
}

static void
fts_lmdb_part_scan_b64_checkpoints(struct fts_lmdb_part_scan *scan,
				   const unsigned char *data, size_t size)
{
	uoff_t decoded;
	size_t i;

	for (i = 0; i < size && !scan->b64_no_more_checkpoints; i++) {
		if (base64_scheme.decmap[data[i]] == 0xff) {
			if (data[i] != ' ' && data[i] != '\t' &&
			    data[i] != '\r' && data[i] != '\n')
				scan->b64_no_more_checkpoints = TRUE;
			continue;
		}
		/* after a whole quantum a new decoder starts clean */
		if (++scan->b64_chars % 4 != 0)
			continue;
		/* Spaced in decoded bytes, each just before a multiple of
		   the spacing: clients fetch slices that start there, and
		   such a slice then decodes at most 2 bytes it doesn't
		   send. */
		decoded = scan->b64_chars / 4 * 3;
		if (decoded + 3 > scan->b64_next_decoded) {
			scan->last_checkpoint = scan->encoded + i + 1;
			fts_lmdb_checkpoint_add(scan->checkpoints,
						scan->last_checkpoint, decoded);
			scan->b64_next_decoded += scan->spacing;
		}
	}
}

static int fts_lmdb_part_scan_b64(struct fts_lmdb_part_scan *scan,
				  const unsigned char *data, size_t size)
{
	unsigned char out[FTS_LMDB_SCAN_BUF_SIZE];
	buffer_t buf;
	size_t pos;

	fts_lmdb_part_scan_b64_checkpoints(scan, data, size);
	while (size > 0) {
		buffer_create_from_data(&buf, out, sizeof(out));
		if (base64_decode_more(&scan->b64, data, size, &pos,
				       &buf) < 0)
			return -1;
		if (pos == 0 && buf.used == 0)
			return -1;
		scan->decoded += buf.used;
		scan->encoded += pos;
		data += pos;
		size -= pos;
	}
	return 0;
}

static int fts_lmdb_part_scan_qp(struct fts_lmdb_part_scan *scan,
				 const unsigned char *data, size_t size)
{
	const unsigned char *lf;
	const char *error;
	size_t chunk, error_pos;

	while (size > 0) {
		/* a line at a time (or a bounded piece of a long one): after
		   an LF the decoder has nothing pending, and a fresh one
		   started there continues identically */
		chunk = I_MIN(size, FTS_LMDB_SCAN_BUF_SIZE);
		lf = memchr(data, '\n', chunk);
		if (lf != NULL)
			chunk = lf - data + 1;
		if (qp_decoder_more(scan->qp, data, chunk, &error_pos,
				    &error) < 0)
			return -1;
		scan->decoded += scan->qp_out->used;
		buffer_set_used_size(scan->qp_out, 0);
		scan->encoded += chunk;
		if (lf != NULL &&
		    scan->encoded - scan->last_checkpoint >= scan->spacing) {
			scan->last_checkpoint = scan->encoded;
			fts_lmdb_checkpoint_add(scan->checkpoints,
						scan->encoded, scan->decoded);
		}
		data += chunk;
		size -= chunk;
	}
	return 0;
}

int fts_lmdb_part_scan_more(struct fts_lmdb_part_scan *scan,
			    const unsigned char *data, size_t size)
{
	int ret;

	if (scan->invalid)
		return -1;
	if (scan->cte == FTS_LMDB_PARTMAP_BASE64)
		ret = fts_lmdb_part_scan_b64(scan, data, size);
	else
		ret = fts_lmdb_part_scan_qp(scan, data, size);
	if (ret < 0)
		scan->invalid = TRUE;
	return ret;
}

int fts_lmdb_part_scan_finish(struct fts_lmdb_part_scan **_scan,
			      uoff_t *decoded_size_r)
{
	struct fts_lmdb_part_scan *scan = *_scan;
	const char *error;
	int ret = scan->invalid ? -1 : 0;

	*_scan = NULL;
	if (scan->cte == FTS_LMDB_PARTMAP_BASE64) {
		if (ret == 0 && base64_decode_finish(&scan->b64) < 0)
			ret = -1;
	} else {
		if (ret == 0 && qp_decoder_finish(scan->qp, &error) < 0)
			ret = -1;
		scan->decoded += scan->qp_out->used;
		qp_decoder_deinit(&scan->qp);
		buffer_free(&scan->qp_out);
	}
	*decoded_size_r = scan->decoded;
	i_free(scan);
	return ret;
}

void fts_lmdb_crlf_scan_init(struct fts_lmdb_crlf_scan *scan,
			     uoff_t spacing,
			     ARRAY_TYPE(fts_lmdb_checkpoint) *checkpoints)
{
	i_zero(scan);
	scan->spacing = spacing;
	scan->checkpoints = checkpoints;
	array_clear(checkpoints);
	fts_lmdb_checkpoint_add(checkpoints, 0, 0);
}

void fts_lmdb_crlf_scan_more(struct fts_lmdb_crlf_scan *scan,
			     const unsigned char *data, size_t size)
{
	const unsigned char *p, *end = data + size;

	while (data < end) {
		p = memchr(data, '\n', end - data);
		if (p == NULL) {
			scan->physical += end - data;
			scan->virtual += end - data;
			scan->last_cr = end[-1] == '\r';
			return;
		}
		/* the LF itself, and the CR that IMAP adds before a bare
		   one */
		scan->physical += p - data + 1;
		scan->virtual += p - data + 1;
		if (!(p > data ? p[-1] == '\r' : scan->last_cr))
			scan->virtual++;
		scan->last_cr = FALSE;
		if (scan->physical - scan->last_checkpoint >= scan->spacing) {
			scan->last_checkpoint = scan->physical;
			fts_lmdb_checkpoint_add(scan->checkpoints,
						scan->physical,
						scan->virtual);
		}
		data = p + 1;
	}
}

static const struct fts_lmdb_checkpoint *
fts_lmdb_checkpoint_bsearch(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			    uoff_t offset, bool encoded)
{
	const struct fts_lmdb_checkpoint *cp;
	unsigned int count, lo = 0, hi, mid;

	cp = array_get(cps, &count);
	i_assert(count > 0);
	/* the last one at or before offset; both offsets only grow */
	hi = count;
	while (hi - lo > 1) {
		mid = (lo + hi) / 2;
		if ((encoded ? cp[mid].encoded : cp[mid].decoded) <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return &cp[lo];
}

const struct fts_lmdb_checkpoint *
fts_lmdb_checkpoint_find(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			 uoff_t decoded)
{
	return fts_lmdb_checkpoint_bsearch(cps, decoded, FALSE);
}

const struct fts_lmdb_checkpoint *
fts_lmdb_checkpoint_find_encoded(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
				 uoff_t encoded)
{
	return fts_lmdb_checkpoint_bsearch(cps, encoded, TRUE);
}

void fts_lmdb_mail_map_init(pool_t pool, struct fts_lmdb_mail_map *map_r)
{
	i_zero(map_r);
	p_array_init(&map_r->crlf, pool, 4);
	p_array_init(&map_r->parts, pool, 4);
	p_array_init(&map_r->converted_pos, pool, 4);
}

static void
fts_lmdb_checkpoints_encode(const ARRAY_TYPE(fts_lmdb_checkpoint) *cps,
			    buffer_t *dest)
{
	const struct fts_lmdb_checkpoint *cp;
	unsigned int i, count;

	/* the leading 0,0 is implied */
	cp = array_get(cps, &count);
	i_assert(count > 0 && cp[0].encoded == 0 && cp[0].decoded == 0);
	numpack_encode(dest, count - 1);
	for (i = 1; i < count; i++) {
		numpack_encode(dest, cp[i].encoded - cp[i-1].encoded);
		numpack_encode(dest, cp[i].decoded - cp[i-1].decoded);
	}
}

void fts_lmdb_mail_map_encode(const struct fts_lmdb_mail_map *map,
			      buffer_t *dest)
{
	const struct fts_lmdb_part_map *part;
	const uoff_t *pos;
	size_t guid_len = strlen(map->guid);
	uoff_t prev = 0;

	buffer_append_c(dest, FTS_LMDB_PARTMAP_VERSION);
	buffer_append_c(dest, map->converts_cleanly ? 1 : 0);
	numpack_encode(dest, array_count(&map->converted_pos));
	array_foreach(&map->converted_pos, pos) {
		i_assert(*pos >= prev);
		numpack_encode(dest, *pos - prev);
		prev = *pos;
	}
	numpack_encode(dest, map->physical_size);
	numpack_encode(dest, guid_len);
	buffer_append(dest, map->guid, guid_len);
	fts_lmdb_checkpoints_encode(&map->crlf, dest);
	numpack_encode(dest, array_count(&map->parts));
	array_foreach(&map->parts, part) {
		numpack_encode(dest, part->physical_pos);
		numpack_encode(dest, part->header_size);
		numpack_encode(dest, part->body_size);
		numpack_encode(dest, part->decoded_size);
		buffer_append_c(dest, part->cte);
		fts_lmdb_checkpoints_encode(&part->checkpoints, dest);
	}
}

static int
fts_lmdb_checkpoints_decode(const uint8_t **p, const uint8_t *end,
			    uoff_t max_encoded, uoff_t max_decoded,
			    pool_t pool, ARRAY_TYPE(fts_lmdb_checkpoint) *cps)
{
	struct fts_lmdb_checkpoint cp;
	uint64_t count, i, enc_delta, dec_delta;

	if (numpack_decode(p, end, &count) < 0 ||
	    count > (uint64_t)(end - *p) / 2)
		return -1;
	p_array_init(cps, pool, count + 1);
	i_zero(&cp);
	array_push_back(cps, &cp);
	for (i = 0; i < count; i++) {
		if (numpack_decode(p, end, &enc_delta) < 0 ||
		    numpack_decode(p, end, &dec_delta) < 0 ||
		    enc_delta == 0 ||
		    enc_delta > max_encoded - cp.encoded ||
		    dec_delta > max_decoded - cp.decoded)
			return -1;
		cp.encoded += enc_delta;
		cp.decoded += dec_delta;
		array_push_back(cps, &cp);
	}
	return 0;
}

int fts_lmdb_mail_map_decode(pool_t pool, const void *data, size_t size,
			     struct fts_lmdb_mail_map *map_r,
			     const char **error_r)
{
	const uint8_t *p = data, *end = p + size;
	struct fts_lmdb_part_map *part;
	uint64_t guid_len, count, i, value[4], delta;
	uoff_t prev_end = 0, pos = 0;
	unsigned int j;

	i_zero(map_r);
	*error_r = "damaged part map";
	if (size < 2 || *p++ != FTS_LMDB_PARTMAP_VERSION || *p > 1)
		return -1;
	map_r->converts_cleanly = *p++ == 1;
	if (numpack_decode(&p, end, &count) < 0 ||
	    count > (uint64_t)(end - p))
		return -1;
	p_array_init(&map_r->converted_pos, pool, count + 1);
	for (i = 0; i < count; i++) {
		if (numpack_decode(&p, end, &delta) < 0 ||
		    delta > UOFF_T_MAX - pos)
			return -1;
		pos += delta;
		array_push_back(&map_r->converted_pos, &pos);
	}
	if (numpack_decode(&p, end, &value[0]) < 0 ||
	    numpack_decode(&p, end, &guid_len) < 0 ||
	    guid_len > (uint64_t)(end - p))
		return -1;
	map_r->physical_size = value[0];
	map_r->guid = p_strndup(pool, p, guid_len);
	p += guid_len;
	/* virtual offsets are at most twice the physical ones */
	if (fts_lmdb_checkpoints_decode(&p, end, map_r->physical_size,
					map_r->physical_size * 2, pool,
					&map_r->crlf) < 0 ||
	    numpack_decode(&p, end, &count) < 0 ||
	    count > (uint64_t)(end - p) / 6)
		return -1;
	p_array_init(&map_r->parts, pool, count + 1);
	for (i = 0; i < count; i++) {
		for (j = 0; j < N_ELEMENTS(value); j++) {
			if (numpack_decode(&p, end, &value[j]) < 0)
				return -1;
		}
		if (p == end)
			return -1;
		part = array_append_space(&map_r->parts);
		part->physical_pos = value[0];
		part->header_size = value[1];
		part->body_size = value[2];
		part->decoded_size = value[3];
		part->cte = *p++;
		/* parts come in file order and lie inside the mail */
		if ((part->cte != FTS_LMDB_PARTMAP_BASE64 &&
		     part->cte != FTS_LMDB_PARTMAP_QP) ||
		    part->physical_pos < prev_end ||
		    part->header_size > map_r->physical_size ||
		    part->body_size > map_r->physical_size -
		    part->header_size ||
		    part->physical_pos > map_r->physical_size -
		    part->header_size - part->body_size)
			return -1;
		prev_end = part->physical_pos + part->header_size +
			part->body_size;
		if (fts_lmdb_checkpoints_decode(&p, end, part->body_size,
						part->decoded_size, pool,
						&part->checkpoints) < 0)
			return -1;
	}
	if (p != end)
		return -1;
	*error_r = NULL;
	return 0;
}

const struct fts_lmdb_part_map *
fts_lmdb_mail_map_find_part(const struct fts_lmdb_mail_map *map,
			    uoff_t physical_pos)
{
	const struct fts_lmdb_part_map *part;

	array_foreach(&map->parts, part) {
		if (part->physical_pos == physical_pos)
			return part;
	}
	return NULL;
}
