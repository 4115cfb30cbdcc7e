#ifndef LEAVE_ON_SERVER_CAPA_H
#define LEAVE_ON_SERVER_CAPA_H

struct ostream;

/* Wraps a POP3 session's output so that its CAPA reply also lists
   extra_line (e.g. "EXPIRE 30", RFC 2449). */
struct ostream *
leave_on_server_capa_ostream_create(struct ostream *output,
				    const char *extra_line);

#endif
