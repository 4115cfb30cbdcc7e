/* Partial fetch. A BINARY fetch or BINARY.SIZE of a base64 or quoted-
   printable part is served from the part's map (fts-lmdb-partmap.h):
   the decoded size comes from the index, and the decoded bytes from a
   stream that seeks to the checkpoint before the slice. Everything else,
   and every message whose map is missing or doesn't match its file,
   takes Dovecot's own path, so answers never differ from stock's. */

#include "lib.h"
#include <ctype.h>
#include "str.h"
#include "strescape.h"
#include "net.h"
#include "write-full.h"
#include "istream.h"
#include "message-part.h"
#include "mail-storage-private.h"
#include "index-mail.h"
#include "mail-user.h"
#include "fts-storage.h"
#include "fts-lmdb-db.h"
#include "fts-lmdb-backend.h"
#include "fts-lmdb-partmap.h"
#include "fts-lmdb-istream.h"
#include "fts-lmdb-mail.h"

#define FTS_LMDB_MAIL_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, fts_lmdb_mail_module)

/* from this size on, a mapped message isn't read ahead */
#define FTS_LMDB_PREFETCH_SKIP_MIN_SIZE (1024*1024)

#define FTS_LMDB_INDEXER_SOCKET_NAME "indexer"
#define FTS_LMDB_INDEXER_HANDSHAKE "VERSION\tindexer\t1\t0\n"

struct fts_lmdb_mail {
	union mail_module_context module_ctx;
	struct fts_lmdb_backend *backend;

	/* the map of map_uid's message, read once per message */
	pool_t map_pool;
	uint32_t map_uid;
	bool have_map;
	struct fts_lmdb_mail_map map;
};

static MODULE_CONTEXT_DEFINE_INIT(fts_lmdb_mail_module,
				  &mail_module_register);

/* Asks the indexer to index the mailbox, as fts_autoindex does, so that
   the next fetch of this message seeks. Once per mailbox and UID. */
static void fts_lmdb_mail_queue_index(struct fts_lmdb_backend *backend,
				      struct mail *mail,
				      const guid_128_t box_guid)
{
	struct mail_user *user = mail->box->storage->user;
	string_t *str;
	const char *path;
	int fd;

	if (guid_128_equals(backend->queued_box_guid, box_guid) &&
	    mail->uid <= backend->queued_uid)
		return;
	memcpy(backend->queued_box_guid, box_guid, GUID_128_SIZE);
	backend->queued_uid = mail->uid;

	path = t_strconcat(user->set->base_dir, "/",
			   FTS_LMDB_INDEXER_SOCKET_NAME, NULL);
	fd = net_connect_unix(path);
	if (fd == -1) {
		e_debug(backend->event, "Can't queue %s for indexing: "
			"net_connect_unix(%s) failed: %m",
			mailbox_get_vname(mail->box), path);
		return;
	}
	str = t_str_new(256);
	str_append(str, FTS_LMDB_INDEXER_HANDSHAKE);
	str_append(str, "APPEND\t0\t");
	str_append_tabescaped(str, user->username);
	str_append_c(str, '\t');
	str_append_tabescaped(str, mailbox_get_vname(mail->box));
	str_append(str, "\t0\t");
	str_append_tabescaped(str, user->session_id);
	str_append_c(str, '\n');
	if (write_full(fd, str_data(str), str_len(str)) < 0) {
		e_debug(backend->event, "Can't queue %s for indexing: "
			"write(%s) failed: %m",
			mailbox_get_vname(mail->box), path);
	}
	i_close_fd(&fd);
}

/* NULL if the map was read, else why there is none to use. */
static const char *
fts_lmdb_mail_map_read(struct fts_lmdb_mail *fmail, struct mail *mail)
{
	struct fts_lmdb_backend *backend = fmail->backend;
	struct fts_lmdb_box_record rec;
	struct mailbox_status status;
	guid_128_t box_guid;
	buffer_t *key = t_buffer_create(8);
	const void *data;
	const char *guid, *error;
	uoff_t size;
	size_t data_size;
	int ret;

	if (fts_lmdb_backend_open(backend, &error) < 0)
		return error;
	if (fts_lmdb_box_guid(mail->box, box_guid) < 0)
		return "no mailbox GUID";
	mailbox_get_open_status(mail->box, STATUS_UIDVALIDITY, &status);
	if (fts_lmdb_db_read_renew(backend->db, &error) < 0)
		return error;
	ret = fts_lmdb_box_record_get(backend, box_guid, &rec, &error);
	if (ret > 0 && (rec.uid_validity != status.uidvalidity ||
			mail->uid > rec.last_uid))
		ret = 0;
	if (ret > 0) {
		fts_lmdb_uid_key(key, rec.box_id, mail->uid);
		ret = fts_lmdb_db_get(backend->db, FTS_LMDB_DBI_PARTS,
				      key->data, key->used, &data,
				      &data_size, &error);
		if (ret > 0) {
			ret = fts_lmdb_mail_map_decode(fmail->map_pool, data,
						       data_size, &fmail->map,
						       &error);
			if (ret < 0) {
				e_error(backend->event, "Mailbox %s UID %u: %s",
					mailbox_get_vname(mail->box),
					mail->uid, error);
			} else {
				ret = 1;
			}
		} else if (ret == 0) {
			error = "no part map (nothing to seek in)";
			ret = -1;
		}
	} else if (ret == 0) {
		fts_lmdb_db_read_release(backend->db);
		fts_lmdb_mail_queue_index(backend, mail, box_guid);
		return "not indexed yet, queued for indexing";
	}
	fts_lmdb_db_read_release(backend->db);
	if (ret < 0)
		return t_strdup(error);

	if (mail_get_physical_size(mail, &size) < 0 ||
	    mail_get_special(mail, MAIL_FETCH_GUID, &guid) < 0)
		return mailbox_get_last_internal_error(mail->box, NULL);
	if (size != fmail->map.physical_size ||
	    strcmp(guid, fmail->map.guid) != 0)
		return "the mail doesn't match its part map";
	return NULL;
}

static bool fts_lmdb_mail_have_map(struct fts_lmdb_mail *fmail,
				   struct mail *mail)
{
	const char *reason;

	if (fmail->map_uid == mail->uid && mail->uid != 0)
		return fmail->have_map;
	fmail->map_uid = mail->uid;
	fmail->have_map = FALSE;
	p_clear(fmail->map_pool);
	if (mail->uid == 0)
		return FALSE;
	T_BEGIN {
		reason = fts_lmdb_mail_map_read(fmail, mail);
		if (reason != NULL) {
			e_debug(fmail->backend->event, "partial fetch "
				"fallback: Mailbox %s UID %u: %s",
				mailbox_get_vname(mail->box), mail->uid,
				reason);
		}
	} T_END;
	fmail->have_map = reason == NULL;
	return fmail->have_map;
}

/* The map of a part's body, if it is one that was mapped and its offsets
   are the ones Dovecot has for it. */
static const struct fts_lmdb_part_map *
fts_lmdb_mail_part_map(struct fts_lmdb_mail *fmail, struct mail *mail,
		       const struct message_part *part)
{
	const struct fts_lmdb_part_map *pmap;

	if (part->children != NULL || !fts_lmdb_mail_have_map(fmail, mail))
		return NULL;
	pmap = fts_lmdb_mail_map_find_part(&fmail->map, part->physical_pos);
	if (pmap == NULL ||
	    pmap->header_size != part->header_size.physical_size ||
	    pmap->body_size != part->body_size.physical_size)
		return NULL;
	return pmap;
}

/* Dovecot answers BINARY.SIZE of a part by converting the whole message
   (failing if any part fails) and summing over the converted parts that
   start within the part's virtual size counted from its physical start:
   for mail stored with LF that range reaches past the part. The decoded
   size is its answer only when the conversion succeeds and no other
   converted part starts in that range; otherwise its path answers. */
static bool fts_lmdb_mail_size_is_stocks(struct fts_lmdb_mail *fmail,
					 const struct message_part *part)
{
	const uoff_t *pos;
	uoff_t end = part->physical_pos + part->header_size.virtual_size +
		part->body_size.virtual_size;

	if (!fmail->map.converts_cleanly)
		return FALSE;
	array_foreach(&fmail->map.converted_pos, pos) {
		if (*pos > part->physical_pos && *pos < end)
			return FALSE;
	}
	return TRUE;
}

static int
fts_lmdb_mail_get_binary_stream(struct mail *_mail,
				const struct message_part *part,
				bool include_hdr, uoff_t *size_r,
				unsigned int *lines_r, bool *binary_r,
				struct istream **stream_r)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct fts_lmdb_mail *fmail = FTS_LMDB_MAIL_CONTEXT(mail);
	const struct fts_lmdb_part_map *pmap;
	struct istream *input;

	pmap = include_hdr ? NULL : fts_lmdb_mail_part_map(fmail, _mail, part);
	if (pmap == NULL) {
		return fmail->module_ctx.super.get_binary_stream(_mail, part,
			include_hdr, size_r, lines_r, binary_r, stream_r);
	}
	if (stream_r == NULL && !fts_lmdb_mail_size_is_stocks(fmail, part)) {
		e_debug(fmail->backend->event, "partial size fallback: "
			"Mailbox %s UID %u part at %"PRIuUOFF_T": Dovecot's "
			"size sums over the whole message's conversion",
			mailbox_get_vname(_mail->box), _mail->uid,
			part->physical_pos);
		return fmail->module_ctx.super.get_binary_stream(_mail, part,
			include_hdr, size_r, lines_r, binary_r, stream_r);
	}
	if (stream_r == NULL) {
		/* BINARY.SIZE. Dovecot's own count of lines for a decoded
		   body without its header is 0: binary.parts doesn't count
		   decoded lines. */
		*size_r = pmap->decoded_size;
		if (lines_r != NULL)
			*lines_r = 0;
		e_debug(fmail->backend->event, "partial size from index: "
			"Mailbox %s UID %u part at %"PRIuUOFF_T,
			mailbox_get_vname(_mail->box), _mail->uid,
			part->physical_pos);
		return 0;
	}
	if (mail_get_stream_because(_mail, NULL, NULL, "binary stream",
				    &input) < 0)
		return -1;
	*stream_r = fts_lmdb_istream_create(input, pmap);
	i_stream_set_name(*stream_r, t_strdup_printf(
		"<binary stream of mailbox %s UID %u>",
		mailbox_get_vname(_mail->box), _mail->uid));
	*size_r = pmap->decoded_size;
	/* decoded content is always sent as binary, as Dovecot does */
	*binary_r = TRUE;
	e_debug(fmail->backend->event, "partial fetch from index: "
		"Mailbox %s UID %u part at %"PRIuUOFF_T,
		mailbox_get_vname(_mail->box), _mail->uid, part->physical_pos);
	return 0;
}

/* The part a section number names, as IMAP numbers parts: a
   message/rfc822 part's number also stands for its message's body. */
static const struct message_part *
fts_lmdb_section_part(const struct message_part *part, const char **section)
{
	const char *p = *section;
	unsigned int num;

	while (part != NULL && i_isdigit(*p)) {
		for (num = 0; i_isdigit(*p); p++)
			num = num * 10 + (*p - '0');
		if (*p == '.')
			p++;
		if ((part->flags & MESSAGE_PART_FLAG_MULTIPART) != 0) {
			for (part = part->children; part != NULL && num > 1;
			     num--)
				part = part->next;
		} else if (num != 1) {
			part = NULL;
		}
		if (part != NULL && i_isdigit(*p)) {
			if ((part->flags & MESSAGE_PART_FLAG_MESSAGE_RFC822) == 0)
				return NULL;
			part = part->children;
		}
	}
	*section = p;
	return part;
}

/* Where IMAP starts counting a section's partial offset, or FALSE for
   sections that are small (headers) or not found. */
static bool fts_lmdb_section_start(struct mail *mail, const char *section,
				   uoff_t *physical_start_r)
{
	struct message_part *parts;
	const struct message_part *part;

	if (section[0] == '\0') {
		/* the whole message: no need for the part tree, which may
		   not be cached */
		*physical_start_r = 0;
		return TRUE;
	}
	if (mail_get_parts(mail, &parts) < 0)
		return FALSE;
	part = i_isdigit(section[0]) ?
		fts_lmdb_section_part(parts, &section) : parts;
	if (part == NULL)
		return FALSE;
	if (section[0] == '\0') {
		/* [1.2]: the part's body */
	} else if (strcasecmp(section, "TEXT") == 0) {
		/* [TEXT], [1.2.TEXT]: the body of a message */
		if (part != parts) {
			if ((part->flags & MESSAGE_PART_FLAG_MESSAGE_RFC822) == 0)
				return FALSE;
			part = part->children;
		}
	} else {
		return FALSE;
	}
	*physical_start_r = part->physical_pos + part->header_size.physical_size;
	return TRUE;
}

/* Virtual (CRLF) offset of a physical offset, from the checkpoint before
   it and at most a checkpoint's spacing of reading. */
static bool fts_lmdb_virtual_offset(struct mail *mail,
				    const struct fts_lmdb_mail_map *map,
				    uoff_t physical, uoff_t *virtual_r)
{
	const struct fts_lmdb_checkpoint *cp;
	struct fts_lmdb_crlf_scan scan;
	ARRAY_TYPE(fts_lmdb_checkpoint) none;
	struct istream *input;
	const unsigned char *data;
	size_t size;

	cp = fts_lmdb_checkpoint_find_encoded(&map->crlf, physical);
	if (mail_get_stream_because(mail, NULL, NULL, "MIME part",
				    &input) < 0)
		return FALSE;
	t_array_init(&none, 1);
	fts_lmdb_crlf_scan_init(&scan, UOFF_T_MAX, &none);
	i_stream_seek(input, cp->encoded);
	while (input->v_offset < physical &&
	       i_stream_read_more(input, &data, &size) > 0) {
		size = I_MIN(size, physical - input->v_offset);
		fts_lmdb_crlf_scan_more(&scan, data, size);
		i_stream_skip(input, size);
	}
	/* a CR just before the start would pair with an LF after it */
	if (input->v_offset != physical || scan.last_cr)
		return FALSE;
	*virtual_r = cp->decoded + scan.virtual;
	return TRUE;
}

void fts_lmdb_mail_seek_hint(struct mail *_mail, const char *section,
			     uoff_t virtual_offset)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct fts_lmdb_mail *fmail = MODULE_CONTEXT(mail, fts_lmdb_mail_module);
	struct mail_msgpart_partial_cache *cache = &_mail->box->partial_cache;
	const struct fts_lmdb_checkpoint *cp;
	uoff_t start, virtual_start;
	bool primed = FALSE;

	if (fmail == NULL || virtual_offset == 0 ||
	    !fts_lmdb_mail_have_map(fmail, _mail))
		return;
	T_BEGIN {
		if (fts_lmdb_section_start(_mail, section, &start) &&
		    fts_lmdb_virtual_offset(_mail, &fmail->map, start,
					    &virtual_start)) {
			/* the cache is used only if it is before the offset */
			cp = fts_lmdb_checkpoint_find(&fmail->map.crlf,
				virtual_start + virtual_offset - 1);
			if (cp->encoded > start) {
				cache->uid = _mail->uid;
				cache->physical_start = start;
				cache->physical_pos = cp->encoded - start;
				cache->virtual_pos = cp->decoded - virtual_start;
				primed = TRUE;
			}
		}
	} T_END;
	if (primed) {
		e_debug(fmail->backend->event, "partial seek from index: "
			"Mailbox %s UID %u section [%s] offset %"PRIuUOFF_T,
			mailbox_get_vname(_mail->box), _mail->uid, section,
			virtual_offset);
	}
}

/* Dovecot's prefetch opens the message and asks the kernel to read all
   of it ahead. A large mapped message is mostly fetched a slice at a
   time, from a checkpoint on, and a whole read needs no hint to be
   sequential. */
static bool fts_lmdb_mail_prefetch(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct fts_lmdb_mail *fmail = FTS_LMDB_MAIL_CONTEXT(mail);
	struct index_mail *imail = INDEX_MAIL(_mail);
	uoff_t size;

	if ((imail->data.access_part & (READ_HDR | READ_BODY)) != 0 &&
	    mail_get_physical_size(_mail, &size) == 0 &&
	    size >= FTS_LMDB_PREFETCH_SKIP_MIN_SIZE &&
	    fts_lmdb_mail_have_map(fmail, _mail))
		return TRUE;
	return fmail->module_ctx.super.prefetch(_mail);
}

static void fts_lmdb_mail_free(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct fts_lmdb_mail *fmail = FTS_LMDB_MAIL_CONTEXT(mail);

	/* fmail lives in the mail's pool, which super.free() frees */
	pool_unref(&fmail->map_pool);
	fmail->module_ctx.super.free(_mail);
}

void fts_lmdb_mail_allocated(struct mail *_mail)
{
	struct mail_private *mail = (struct mail_private *)_mail;
	struct mail_vfuncs *v = mail->vlast;
	struct fts_backend *_backend;
	struct fts_lmdb_backend *backend;
	struct fts_lmdb_mail *fmail;

	if (_mail->box->virtual_vfuncs != NULL)
		return;
	_backend = fts_list_backend(_mail->box->list);
	if (_backend == NULL ||
	    strcmp(_backend->name, fts_backend_lmdb.name) != 0)
		return;
	backend = container_of(_backend, struct fts_lmdb_backend, backend);
	if (!backend->set.partial_fetch)
		return;

	fmail = p_new(mail->pool, struct fts_lmdb_mail, 1);
	fmail->module_ctx.super = *v;
	mail->vlast = &fmail->module_ctx.super;
	fmail->backend = backend;
	fmail->map_pool = pool_alloconly_create("fts-lmdb part map", 1024);

	v->get_binary_stream = fts_lmdb_mail_get_binary_stream;
	v->prefetch = fts_lmdb_mail_prefetch;
	v->free = fts_lmdb_mail_free;
	MODULE_CONTEXT_SET(mail, fts_lmdb_mail_module, fmail);
}
