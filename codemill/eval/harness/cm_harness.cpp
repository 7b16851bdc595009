// HumanEval-X C++: the program's main(), around the test's own (renamed cm_test_main by the test's translation
// unit, which also routes every assert() here). Compiled once per machine into an object of its own, so no
// macro or declaration of the sample reaches it. After the test returned it reads the run's key from fd 3 and
// prints the proof of a pass: CODEMILL-PASS <assertions run> <HMAC-SHA256(key, "codemill-pass <n>")>.
// A failed assertion reports itself, kills every other process of the sandbox (so no forked copy of the
// program can go on to pass) and exits.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int cm_test_main();

namespace {

unsigned long assertions = 0;

struct Sha256 {
    uint32_t h[8];
    uint64_t length;
    unsigned char block[64];
    size_t used;
};

const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha_block(Sha256 &s, const unsigned char *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s.h[0], b = s.h[1], c = s.h[2], d = s.h[3], e = s.h[4], f = s.h[5], g = s.h[6], h = s.h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s.h[0] += a; s.h[1] += b; s.h[2] += c; s.h[3] += d; s.h[4] += e; s.h[5] += f; s.h[6] += g; s.h[7] += h;
}

void sha_init(Sha256 &s) {
    const uint32_t init[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s.h, init, sizeof init);
    s.length = 0;
    s.used = 0;
}

void sha_update(Sha256 &s, const unsigned char *p, size_t n) {
    s.length += n;
    while (n > 0) {
        size_t take = 64 - s.used < n ? 64 - s.used : n;
        memcpy(s.block + s.used, p, take);
        s.used += take; p += take; n -= take;
        if (s.used == 64) { sha_block(s, s.block); s.used = 0; }
    }
}

void sha_final(Sha256 &s, unsigned char out[32]) {
    uint64_t bits = s.length * 8;
    unsigned char pad = 0x80, zero = 0;
    sha_update(s, &pad, 1);
    while (s.used != 56) sha_update(s, &zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = s.h[i] >> 24; out[4 * i + 1] = s.h[i] >> 16; out[4 * i + 2] = s.h[i] >> 8; out[4 * i + 3] = s.h[i];
    }
}

void hmac_sha256(const unsigned char *key, size_t key_len, const char *msg, unsigned char out[32]) {
    unsigned char k[64] = {0}, ipad[64], opad[64], inner[32];
    if (key_len > 64) {
        Sha256 s; sha_init(s); sha_update(s, key, key_len); sha_final(s, k);
    } else {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < 64; i++) { ipad[i] = k[i] ^ 0x36; opad[i] = k[i] ^ 0x5c; }
    Sha256 s;
    sha_init(s); sha_update(s, ipad, 64); sha_update(s, (const unsigned char *)msg, strlen(msg)); sha_final(s, inner);
    sha_init(s); sha_update(s, opad, 64); sha_update(s, inner, 32); sha_final(s, out);
}

bool in_sandbox_pid_namespace() {
    char comm[32] = {0};
    FILE *f = fopen("/proc/1/comm", "r");
    if (!f) return false;
    size_t n = fread(comm, 1, sizeof comm - 1, f);
    fclose(f);
    return n >= 5 && strncmp(comm, "bwrap", 5) == 0;
}

void write_all(int fd, const char *text) {
    size_t n = strlen(text);
    while (n > 0) {
        ssize_t w = write(fd, text, n);
        if (w <= 0) return;
        text += w; n -= (size_t)w;
    }
}

}  // namespace

extern "C" void cm_assert_hit(int ok, const char *expr, int line) {
    assertions++;
    if (ok) return;
    char message[512];
    snprintf(message, sizeof message, "\ncodemill: assertion failed at line %d: %.400s\n", line, expr);
    write_all(2, message);
    if (in_sandbox_pid_namespace()) kill(-1, SIGKILL);
    _exit(1);
}

int main() {
    cm_test_main();
    unsigned char key[256];
    ssize_t n = read(3, key, sizeof key);
    if (n <= 0 || assertions == 0) return 0;
    char message[64], line[160];
    snprintf(message, sizeof message, "codemill-pass %lu", assertions);
    unsigned char mac[32];
    hmac_sha256(key, (size_t)n, message, mac);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    snprintf(line, sizeof line, "\nCODEMILL-PASS %lu %s\n", assertions, hex);
    write_all(1, line);
    return 0;
}
