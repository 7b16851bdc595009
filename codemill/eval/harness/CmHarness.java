// HumanEval-X Java: the program's entry point, around the test's own main (the test's class renamed CmTestMain
// by the program builder). After the test returned it reads the run's key from fd 3 and prints the proof of a
// pass, CODEMILL-PASS 1 <HMAC-SHA256(key, "codemill-pass 1")>, straight to file descriptor 1 (whatever the
// sample did to System.out). An exception from the test propagates: the JVM reports it and exits with 1.
import java.io.FileDescriptor;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

public class CmHarness {
    public static void main(String[] args) throws Exception {
        CmTestMain.main(args);
        java.io.ByteArrayOutputStream read = new java.io.ByteArrayOutputStream();
        try (FileInputStream in = new FileInputStream("/proc/self/fd/3")) {
            byte[] buffer = new byte[256];
            for (int n = in.read(buffer); n > 0; n = in.read(buffer)) {  // a pipe: no readAllBytes (it seeks)
                read.write(buffer, 0, n);
            }
        }
        byte[] key = read.toByteArray();
        if (key.length == 0) {
            return;
        }
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(key, "HmacSHA256"));
        byte[] digest = mac.doFinal("codemill-pass 1".getBytes(StandardCharsets.US_ASCII));
        StringBuilder line = new StringBuilder("\nCODEMILL-PASS 1 ");
        for (byte b : digest) {
            line.append(String.format("%02x", b & 0xff));
        }
        line.append('\n');
        FileOutputStream out = new FileOutputStream(FileDescriptor.out);
        out.write(line.toString().getBytes(StandardCharsets.US_ASCII));
        out.flush();
    }
}
