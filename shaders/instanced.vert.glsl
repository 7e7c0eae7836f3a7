#version 150
// Boxes drawn by instancing: one unit box, per-instance position, turn, size and colour.
uniform mat4 p3d_ModelViewProjectionMatrix;
in vec4 p3d_Vertex;
in vec4 i_offset;  // xyz: base centre; w: turn about z, radians
in vec4 i_scale;   // xyz: size; w: glow 0..1
in vec4 i_color;   // rgba
out vec3 v_pos;    // world position: the fragment shader derives the face normal from it
out vec4 v_color;
out float v_glow;
out float v_up;

void main() {
    float c = cos(i_offset.w);
    float s = sin(i_offset.w);
    vec3 p = p3d_Vertex.xyz * i_scale.xyz;
    p = vec3(c * p.x - s * p.y, s * p.x + c * p.y, p.z);
    v_pos = p + i_offset.xyz;
    v_color = i_color;
    v_glow = i_scale.w;
    v_up = p3d_Vertex.z;
    gl_Position = p3d_ModelViewProjectionMatrix * vec4(v_pos, 1.0);
}
