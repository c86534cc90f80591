/*
 * rng-reseed HEX: mix the bytes HEX spells into the kernel's entropy pool and reseed its crng from it now.
 *
 * Guests restored from one memory snapshot resume one kernel RNG state: Linux 6.1 reseeds its crng from
 * the input pool only when the key is 60 s old (drivers/char/random.c, crng_has_old_seed(), jiffies that
 * resume where they were saved), so until then every restored copy draws the same bytes. RNDADDENTROPY
 * mixes the host's bytes into the input pool (and credits them); RNDRESEEDCRNG runs crng_reseed() at once,
 * which bumps the crng generation, so every later draw (getrandom, /dev/urandom, the kernel's own) comes
 * from the new key. Both need CAP_SYS_ADMIN. Silent on success; one line on stderr and exit 1 otherwise.
 *
 * Built by the image recipe (images/linux/recipe.yaml, programs:) with the host's compiler, statically.
 */
#include <fcntl.h>
#include <linux/random.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define MAX_BYTES 64

static int nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int main(int argc, char **argv)
{
	struct {
		struct rand_pool_info info;
		unsigned char bytes[MAX_BYTES];
	} seed;
	size_t len = argc == 2 ? strlen(argv[1]) : 0;
	int fd;

	if (len < 32 || len > 2 * MAX_BYTES || len % 2) {
		fputs("usage: rng-reseed HEX (16 to 64 bytes in lower-case hex)\n", stderr);
		return 1;
	}
	for (size_t i = 0; i < len / 2; i++) {
		int high = nibble(argv[1][2 * i]), low = nibble(argv[1][2 * i + 1]);
		if (high < 0 || low < 0) {
			fputs("rng-reseed: not lower-case hex\n", stderr);
			return 1;
		}
		seed.bytes[i] = (unsigned char)(high << 4 | low);
	}
	seed.info.buf_size = (int)(len / 2);
	seed.info.entropy_count = (int)(len / 2 * 8);
	fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, RNDADDENTROPY, &seed.info) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0) {
		perror("rng-reseed");
		return 1;
	}
	return 0;
}
