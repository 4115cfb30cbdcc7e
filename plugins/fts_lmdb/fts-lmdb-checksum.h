#ifndef FTS_LMDB_CHECKSUM_H
#define FTS_LMDB_CHECKSUM_H

/* CRC32C (Castagnoli) of size bytes at data, continuing crc (0 to
   start). Every value in the index carries one (fts-lmdb-db.c), and
   a scan reads megabytes of token blocks, so it uses the CPU's
   CRC32 instruction where there is one; the result is the same either
   way. */
uint32_t fts_lmdb_checksum(uint32_t crc, const void *data, size_t size);
/* The same without the CPU instruction (the unit test compares them). */
uint32_t fts_lmdb_checksum_portable(uint32_t crc, const void *data,
				    size_t size);

#endif
